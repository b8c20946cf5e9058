// dsv3-tokenize-bench: encode throughput on a large mixed text, generated deterministically
// (English, Chinese, Japanese, code, numbers, emoji, other scripts, identifiers and hashes), so
// that bench/tokenizer/node/bench.mjs can time the npm encoder on the very same bytes
// (--write-corpus). Prints one JSON line: bytes, tokens, cold (first pass, empty BPE cache) and
// warm (best of --iterations) seconds and MB/s.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

// splitmix64: a fixed generator, so every build and machine writes the same corpus.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return Next() % n; }
  template <typename T, size_t N>
  const T& Pick(const T (&items)[N]) {
    return items[Below(N)];
  }

 private:
  uint64_t state_;
};

constexpr const char* kEnglish[] = {"the",
                                    "of",
                                    "and",
                                    "to",
                                    "in",
                                    "is",
                                    "that",
                                    "for",
                                    "it",
                                    "as",
                                    "was",
                                    "with",
                                    "be",
                                    "by",
                                    "on",
                                    "not",
                                    "he",
                                    "this",
                                    "are",
                                    "or",
                                    "his",
                                    "from",
                                    "at",
                                    "which",
                                    "but",
                                    "have",
                                    "an",
                                    "had",
                                    "they",
                                    "you",
                                    "were",
                                    "their",
                                    "one",
                                    "all",
                                    "we",
                                    "can",
                                    "her",
                                    "has",
                                    "there",
                                    "been",
                                    "if",
                                    "more",
                                    "when",
                                    "will",
                                    "would",
                                    "who",
                                    "so",
                                    "no",
                                    "model",
                                    "language",
                                    "token",
                                    "server",
                                    "request",
                                    "stream",
                                    "latency",
                                    "throughput",
                                    "distributed",
                                    "attention",
                                    "experts",
                                    "inference",
                                    "quantization",
                                    "benchmark",
                                    "unbelievably",
                                    "internationalization",
                                    "misunderstanding",
                                    "photosynthesis",
                                    "Paris",
                                    "DeepSeek",
                                    "Kubernetes",
                                    "PostgreSQL",
                                    "isn't",
                                    "we've",
                                    "they'll",
                                    "O'Brien"};
constexpr const char* kPunctuation[] = {".", ",", ";", ":", "!", "?", " —", "...", ")", "\""};
constexpr const char* kChinese[] = {
    "我们", "模型", "语言",     "推理",     "服务器", "的",   "是",     "在",   "了",   "和",
    "有",   "这个", "人工智能", "深度学习", "数据",   "计算", "分布式", "系统", "性能", "测试",
    "中国", "北京", "上海",     "时间",     "问题",   "因为", "所以",   "但是", "可以", "需要",
    "，",   "。",   "、",       "：",       "“",      "”",    "！",     "？"};
constexpr const char* kJapanese[] = {"これは", "テスト",   "です",     "。",   "日本語", "の",
                                     "文章",   "カタカナ", "ひらがな", "東京", "、"};
constexpr const char* kOtherScripts[] = {
    "Привет", "мир",  "مرحبا", "بالعالم", "안녕하세요", "세계", "Γειά",   "σου",
    "नमस्ते",   "สวัสดี", "naïve", "café",    "Ångström",   "über", "ﬁnance", "Ｆｕｌｌｗｉｄｔｈ"};
constexpr const char* kEmoji[] = {"😀",      "🚀",    "👍", "🇺🇸", "👨‍👩‍👧",
                                  "❤️", "🤖", "✨", "🎉",  "½",
                                  "²",      "€",    "→", "∑",  "≤"};
constexpr const char* kCode[] = {"def {id}(x, y):\n    return x * {n} + y\n\n",
                                 "for (int i = 0; i < {n}; ++i) {\n  {id}[i] = i * i;\n}\n",
                                 "const {id} = await fetch(`/api/v1/items/${{n}}`);\n",
                                 "if err != nil {\n\treturn fmt.Errorf(\"{id}: %w\", err)\n}\n",
                                 "SELECT {id}, COUNT(*) FROM events WHERE ts > {n} GROUP BY 1;\n",
                                 "    self.{id} = nn.Linear({n}, {n}, bias=False)  # projection\n",
                                 "<div class=\"{id}\">{n}</div>\n",
                                 "{\"{id}\": [{n}, {n}], \"ok\": true}\n"};

std::string Identifier(Random& rng) {
  static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string id;
  const size_t n = 3 + rng.Below(10);
  for (size_t i = 0; i < n; ++i) id += kLetters[rng.Below(sizeof(kLetters) - 1)];
  return id;
}

std::string Number(Random& rng) {
  switch (rng.Below(4)) {
    case 0:
      return std::to_string(rng.Below(100));
    case 1:
      return std::to_string(rng.Below(10000000));
    case 2:
      return std::to_string(rng.Below(1000)) + "." + std::to_string(rng.Below(100000));
    default:
      return "20" + std::to_string(10 + rng.Below(20)) + "-0" + std::to_string(1 + rng.Below(9)) +
             "-1" + std::to_string(rng.Below(10));
  }
}

std::string Fill(std::string pattern, Random& rng) {
  for (size_t at; (at = pattern.find("{id}")) != std::string::npos;) {
    pattern.replace(at, 4, Identifier(rng));
  }
  for (size_t at; (at = pattern.find("{n}")) != std::string::npos;) {
    pattern.replace(at, 3, Number(rng));
  }
  return pattern;
}

std::string Corpus(size_t bytes) {
  Random rng(20261128);
  std::string text;
  while (text.size() < bytes) {
    const size_t kind = rng.Below(100);
    if (kind < 40) {  // an English sentence
      std::string s = rng.Pick(kEnglish);
      s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
      for (size_t n = 4 + rng.Below(16); n > 0; --n) {
        s += rng.Below(8) == 0 ? rng.Pick(kPunctuation) : "";
        s += " ";
        s += rng.Below(20) == 0 ? Number(rng) : rng.Pick(kEnglish);
      }
      text += s + ". ";
      if (rng.Below(5) == 0) text += "\n\n";
    } else if (kind < 55) {  // Chinese
      for (size_t n = 6 + rng.Below(20); n > 0; --n) text += rng.Pick(kChinese);
      text += "。\n";
    } else if (kind < 75) {
      text += Fill(rng.Pick(kCode), rng);
    } else if (kind < 82) {
      for (size_t n = 3 + rng.Below(8); n > 0; --n)
        text += Number(rng) + (rng.Below(2) ? ", " : " ");
    } else if (kind < 87) {
      for (size_t n = 3 + rng.Below(8); n > 0; --n) text += rng.Pick(kJapanese);
      text += "\n";
    } else if (kind < 93) {
      for (size_t n = 2 + rng.Below(6); n > 0; --n) {
        text += rng.Pick(kOtherScripts);
        text += rng.Below(3) == 0 ? rng.Pick(kEmoji) : " ";
      }
    } else {  // identifiers, hashes, paths: words no cache has seen
      text += "/usr/" + Identifier(rng) + "/" + Identifier(rng) + " sha256:";
      for (int i = 0; i < 16; ++i) text += "0123456789abcdef"[rng.Below(16)];
      text += rng.Pick(kEmoji);
      text += "\t\n";
    }
  }
  // Cut at a character boundary.
  size_t end = bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  text.resize(end);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Encode throughput of the tokenizer on a generated mixed corpus"};
  std::string path;
  double megabytes = 4;
  int iterations = 5;
  std::string corpus_out;
  app.add_option("--tokenizer", path, "tokenizer.json or the directory holding it")->required();
  app.add_option("--mb", megabytes, "corpus size in MB (10^6 bytes)");
  app.add_option("--iterations", iterations, "timed passes after the cold one")
      ->check(CLI::PositiveNumber);
  app.add_option("--write-corpus", corpus_out, "also write the corpus to this file");
  CLI11_PARSE(app, argc, argv);

  auto tokenizer = dsv3::Tokenizer::Load(path);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  const std::string corpus = Corpus(static_cast<size_t>(megabytes * 1e6));
  if (!corpus_out.empty()) {
    std::ofstream(corpus_out, std::ios::binary) << corpus;
  }

  using Clock = std::chrono::steady_clock;
  const auto time_encode = [&](size_t* tokens) {
    const auto start = Clock::now();
    *tokens = (*tokenizer)->Encode(corpus).size();
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  size_t tokens = 0;
  const double cold = time_encode(&tokens);
  double warm = cold;
  for (int i = 0; i < iterations; ++i) warm = std::min(warm, time_encode(&tokens));
  const double mb = static_cast<double>(corpus.size()) / 1e6;
  std::cout << nlohmann::json{{"bytes", corpus.size()}, {"tokens", tokens},
                              {"cold_seconds", cold},   {"cold_mb_per_s", mb / cold},
                              {"seconds", warm},        {"mb_per_s", mb / warm}}
                   .dump()
            << "\n";
  return 0;
}
