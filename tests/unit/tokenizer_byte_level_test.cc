#include <gtest/gtest.h>

#include <string>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/regex.h"

namespace dsv3::tokenizer::tokenizer_byte_level_test {
namespace {

TEST(ByteLevelTest, MapsEveryByteToADistinctCodePointAndBack) {
  EXPECT_EQ(ByteToCodePoint('A'), U'A');
  EXPECT_EQ(ByteToCodePoint(' '), U'Ġ');   // U+0120
  EXPECT_EQ(ByteToCodePoint('\n'), U'Ċ');  // U+010A
  for (int b = 0; b < 256; ++b) EXPECT_EQ(CodePointToByte(ByteToCodePoint(b)), b);
  EXPECT_EQ(CodePointToByte(U'｜'), -1);
}

TEST(ByteLevelTest, TokenToBytes) {
  EXPECT_EQ(TokenToBytes("ĠHello"), " Hello");
  EXPECT_EQ(TokenToBytes("ĊĊ"), "\n\n");
  EXPECT_EQ(TokenToBytes("ðŁĺ"), "\xF0\x9F\x98");  // part of an emoji
  // A character that stands for no byte: the token is its own text (added tokens).
  EXPECT_EQ(TokenToBytes("<｜User｜>"), "<｜User｜>");
}

struct LossyCase {
  std::string input;
  std::string expected;
};

TEST(ByteLevelTest, LossyReplacesEachMaximalIllFormedSubsequence) {
  const std::string r = "\xEF\xBF\xBD";
  const LossyCase cases[] = {
      {"plain", "plain"},
      {"\xC3\xA9", "\xC3\xA9"},
      {"a\xC3", "a" + r},
      {"\xE4\xB8z", r + "z"},               // truncated 3-byte sequence: one U+FFFD
      {"\xF0\x9F\x98", r},                  // truncated 4-byte sequence: one U+FFFD
      {"\x80\x80", r + r},                  // lone continuations: one each
      {"\xC0\xAF", r + r},                  // overlong lead: never valid, one each
      {"\xED\xA0\x80", r + r + r},          // surrogate: ED then A0 is ill-formed
      {"\xF4\x90\x80\x80", r + r + r + r},  // above U+10FFFF
      {"\xE0\xA0", r},                      // well-formed prefix of U+0800
      {"\xFF"
       "a\xF0\x9F\x98\x80",
       r + "a\xF0\x9F\x98\x80"},
  };
  for (const LossyCase& c : cases) {
    std::string out;
    AppendUtf8Lossy(c.input, out);
    EXPECT_EQ(out, c.expected) << ::testing::PrintToString(c.input);
    EXPECT_EQ(IsValidUtf8(c.input), c.input == c.expected) << ::testing::PrintToString(c.input);
  }
}

TEST(ByteLevelTest, CompleteUtf8PrefixHoldsOnlyAnUnfinishedCharacter) {
  const struct {
    std::string input;
    size_t expected;
  } cases[] = {
      {"", 0},
      {"abc", 3},
      {"ab\xC3", 2},
      {"\xE4\xB8", 0},
      {"x\xF0\x9F\x98", 1},
      {"\xF0\x9F\x98\x80", 4},
      {"a\x80", 2},     // a stray continuation finishes nothing: emit it (as U+FFFD)
      {"\xE4\x41", 2},  // already ill-formed: nothing to wait for
      {"\xED\xA0", 2},  // ill-formed second byte
      {"\xC3\xA9\xC3", 2},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(CompleteUtf8Prefix(c.input), c.expected) << ::testing::PrintToString(c.input);
  }
}

TEST(RegexTest, OnigurumaWhitespaceClassesAreRewritten) {
  const std::string ws =
      "\\t\\n\\x0B\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
      "\\x{202F}\\x{205F}\\x{3000}";
  EXPECT_EQ(OnigurumaToPcre2(R"(\s+(?!\S))"), "[" + ws + "]+(?![^" + ws + "])");
  EXPECT_EQ(OnigurumaToPcre2(R"([^\s\p{L}])"), "[^" + ws + "\\p{L}]");
  EXPECT_EQ(OnigurumaToPcre2(R"([]\s]\\s)"), "[]" + ws + "]\\\\s");  // literal ']' and '\\'
  EXPECT_EQ(OnigurumaToPcre2(R"(\p{N}{1,3})"), R"(\p{N}{1,3})");
}

TEST(RegexTest, WhitespaceMatchesOnigurumaNotPcre2) {
  absl::StatusOr<Regex> re = Regex::Compile(OnigurumaToPcre2(R"(\s)"));
  ASSERT_TRUE(re.ok()) << re.status();
  Match m;
  EXPECT_TRUE(re->Find("\u3000", 0, &m));
  EXPECT_TRUE(re->Find("\u0085", 0, &m));
  EXPECT_FALSE(re->Find("\u180E", 0, &m));  // Mongolian vowel separator: not White_Space
  EXPECT_FALSE(re->Find("\uFEFF", 0, &m));
}

}  // namespace
}  // namespace dsv3::tokenizer::tokenizer_byte_level_test
