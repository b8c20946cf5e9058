// Encode/Decode of the real DeepSeek-V3 tokenizer (extracted by CMake into DSV3_TOKENIZER_DIR),
// and its parts on their own: pre-tokenizer splits, BPE, added-token matching.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace dsv3::tokenizer_encode_test {
namespace {

const Tokenizer& V3() {
  static const Tokenizer* tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(DSV3_TOKENIZER_DIR);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->release() : nullptr;
  }();
  return *tokenizer;
}

std::vector<std::string> Split(const tokenizer::PreTokenizer& pre, const std::string& text) {
  std::vector<tokenizer::Piece> pieces, scratch;
  pre.Split(text, {0, text.size()}, pieces, scratch);
  std::vector<std::string> out;
  for (const auto& p : pieces) out.push_back(text.substr(p.begin, p.end - p.begin));
  return out;
}

TEST(PreTokenizerTest, SplitsLikeTheV3Patterns) {
  std::ifstream in(std::string(DSV3_TOKENIZER_DIR) + "/tokenizer.json");
  const nlohmann::json json = nlohmann::json::parse(in);
  absl::StatusOr<tokenizer::PreTokenizer> pre =
      tokenizer::PreTokenizer::FromJson(json["pre_tokenizer"]);
  ASSERT_TRUE(pre.ok()) << pre.status();
  const struct {
    std::string text;
    std::vector<std::string> pieces;
  } cases[] = {
      {"Hello world", {"Hello", " world"}},
      {"12345", {"123", "45"}},  // digits in threes
      {"a1234b", {"a", "123", "4", "b"}},
      {"你好世界abc", {"你好世界", "abc"}},  // CJK runs stand alone
      {"日本語のテキスト", {"日本語のテキスト"}},
      {"  hello", {" ", " hello"}},  // \s+(?!\S) leaves the last space
      {"a.b", {"a", ".b"}},          // punctuation + ASCII letters
      {"x\n\ny", {"x", "\n\n", "y"}},
      {"foo!!!\n", {"foo", "!!!\n"}},
      {"trailing   ", {"trailing", "   "}},
      {"", {}},
  };
  for (const auto& c : cases) EXPECT_EQ(Split(*pre, c.text), c.pieces) << c.text;
}

TEST(PreTokenizerTest, StringPatternsAreLiteralAndRemovedDropsMatches) {
  absl::StatusOr<tokenizer::PreTokenizer> pre = tokenizer::PreTokenizer::FromJson(
      nlohmann::json::parse(R"({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": ".*"}, "behavior": "Isolated"},
        {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed"}]})"));
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_EQ(Split(*pre, "a.*b c..d"), (std::vector<std::string>{"a", ".*", "b", "c..d"}));
}

TEST(PreTokenizerTest, RejectsWhatItDoesNotImplement) {
  const auto config = nlohmann::json::parse(
      R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "MergedWithNext"})");
  EXPECT_FALSE(tokenizer::PreTokenizer::FromJson(config).ok());
  EXPECT_FALSE(
      tokenizer::PreTokenizer::FromJson(nlohmann::json::parse(R"({"type": "Nope"})")).ok());
  EXPECT_FALSE(tokenizer::PreTokenizer::FromJson(
                   nlohmann::json::parse(
                       R"({"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"})"))
                   .ok());
}

TEST(TokenizerTest, EncodesKnownText) {
  const struct {
    std::string text;
    std::vector<int32_t> ids;
  } cases[] = {
      {"Hello, world!", {19923, 14, 2058, 3}},
      {"Hello, world! 你好世界 12345 <｜User｜>hi",
       {19923, 14, 2058, 3, 223, 30594, 3427, 223, 6895, 1883, 223, 128803, 6366}},
      {"<｜begin▁of▁sentence｜><｜User｜>", {0, 128803}},
      {"", {}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(V3().Encode(c.text), c.ids) << c.text;
    EXPECT_EQ(V3().Decode(c.ids), c.text);
  }
}

TEST(TokenizerTest, VocabularyAndSpecialTokens) {
  EXPECT_EQ(V3().vocab_size(), 128815);
  EXPECT_EQ(V3().bos_id(), 0);
  EXPECT_EQ(V3().eos_ids(), std::vector<int32_t>{1});
  EXPECT_EQ(V3().TokenId("<｜User｜>"), 128803);
  EXPECT_EQ(V3().TokenId("Hello"), 19923);
  EXPECT_EQ(V3().TokenId("no such token"), std::nullopt);
  EXPECT_TRUE(V3().IsSpecial(0));
  EXPECT_FALSE(V3().IsSpecial(128803));  // <｜User｜> is added but not special
  EXPECT_FALSE(V3().IsSpecial(19923));
  EXPECT_FALSE(V3().IsSpecial(-1));
}

TEST(TokenizerTest, SkipSpecialTokensDropsOnlySpecialOnes) {
  const std::vector<int32_t> ids =
      V3().Encode("<｜begin▁of▁sentence｜><｜User｜>Hi<｜end▁of▁sentence｜>");
  EXPECT_EQ(V3().Decode(ids, /*skip_special_tokens=*/true), "<｜User｜>Hi");
}

TEST(TokenizerTest, DecodeReplacesIllFormedBytesAndSkipsUnknownIds) {
  const std::vector<int32_t> emoji = V3().Encode("😀");
  ASSERT_GE(emoji.size(), 1u);
  std::vector<int32_t> ids = {19923, -5, 1 << 30};
  EXPECT_EQ(V3().Decode(ids), "Hello");
  // The first byte token of a split character alone decodes to U+FFFD.
  const std::vector<int32_t> split = V3().Encode("😀½");
  ASSERT_GE(split.size(), 2u);
  EXPECT_EQ(V3().Decode(std::span(split).first(1)).substr(0, 3), "\xEF\xBF\xBD");
}

TEST(TokenizerTest, IllFormedInputIsEncodedAsItsReplacement) {
  EXPECT_EQ(V3().Encode("a\xFF"
                        "b"),
            V3().Encode("a\xEF\xBF\xBD"
                        "b"));
}

TEST(TokenizerTest, RoundTripsMixedText) {
  const std::string texts[] = {
      "def f(x):\n    return x * 2\n",      "naïve café — «quoted» …",
      "  leading and trailing  \n\n",       "🇺🇸👨‍👩‍👧 emoji",
      "\t\r\n mixed\u00a0spaces\u3000here", "<｜tool▁sep｜>not<｜Assistant｜>",
      "مرحبا بالعالم Привет мир 한국어",
  };
  for (const std::string& t : texts) EXPECT_EQ(V3().Decode(V3().Encode(t)), t);
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "word" + std::to_string(i * 7919) + " 数字 ";
  const std::vector<int32_t> expected = V3().Encode(text);
  std::vector<std::thread> threads;
  std::vector<bool> same(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      bool ok = true;
      for (int i = 0; i < 20; ++i) ok = ok && V3().Encode(text) == expected;
      same[t] = ok;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_TRUE(same[t]) << "thread " << t;
}

TEST(TokenizerTest, LoadFailsClearly) {
  EXPECT_EQ(Tokenizer::Load("/nonexistent/dir").status().code(), absl::StatusCode::kNotFound);
}

std::vector<std::pair<std::string, int32_t>> Segments(const tokenizer::AddedTokenMatcher& m,
                                                      const std::string& text) {
  std::vector<tokenizer::Segment> segments;
  m.Split(text, 0, text.size(), segments);
  std::vector<std::pair<std::string, int32_t>> out;
  for (const auto& s : segments) out.emplace_back(text.substr(s.begin, s.end - s.begin), s.id);
  return out;
}

TEST(AddedTokenMatcherTest, MatchesLeftmostLongestWithStripAndWordFlags) {
  std::vector<tokenizer::AddedToken> tokens = {
      {.id = 1, .content = "<a"},
      {.id = 2, .content = "<ab>"},
      {.id = 3, .content = "<l>", .lstrip = true},
      {.id = 4, .content = "<r>", .rstrip = true},
      {.id = 5, .content = "hi", .single_word = true},
  };
  absl::StatusOr<tokenizer::AddedTokenMatcher> m = tokenizer::AddedTokenMatcher::Create(tokens);
  ASSERT_TRUE(m.ok()) << m.status();
  using Segs = std::vector<std::pair<std::string, int32_t>>;
  EXPECT_EQ(Segments(*m, "x<ab>y"), (Segs{{"x", -1}, {"<ab>", 2}, {"y", -1}}));
  EXPECT_EQ(Segments(*m, "<a<ab>"), (Segs{{"<a", 1}, {"<ab>", 2}}));
  EXPECT_EQ(Segments(*m, "<abc"), (Segs{{"<a", 1}, {"bc", -1}}));
  EXPECT_EQ(Segments(*m, "a \u3000<l>b"), (Segs{{"a", -1}, {" \u3000<l>", 3}, {"b", -1}}));
  EXPECT_EQ(Segments(*m, "a<r> \n b"), (Segs{{"a", -1}, {"<r> \n ", 4}, {"b", -1}}));
  EXPECT_EQ(Segments(*m, "<r> <l>"), (Segs{{"<r> ", 4}, {"<l>", 3}}));  // lstrip stops at <r>
  EXPECT_EQ(Segments(*m, "hi there"), (Segs{{"hi", 5}, {" there", -1}}));
  EXPECT_EQ(Segments(*m, "this, hi!"), (Segs{{"this, ", -1}, {"hi", 5}, {"!", -1}}));
  EXPECT_EQ(Segments(*m, "chip"), (Segs{{"chip", -1}}));
  EXPECT_EQ(Segments(*m, "éhi"), (Segs{{"éhi", -1}}));  // é is a word character
  EXPECT_EQ(Segments(*m, ""), Segs{});
}

}  // namespace
}  // namespace dsv3::tokenizer_encode_test
