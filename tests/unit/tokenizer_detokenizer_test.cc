#include "engine/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/detokenizer.h"

namespace dsv3::tokenizer_detokenizer_test {
namespace {

const Tokenizer& V3() {
  static const Tokenizer* tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(DSV3_TOKENIZER_DIR);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->release() : nullptr;
  }();
  return *tokenizer;
}

// The id of the token that stands for the single byte `b`.
int32_t ByteToken(uint8_t b) {
  std::string token;
  tokenizer::AppendUtf8(tokenizer::ByteToCodePoint(b), token);
  return V3().TokenId(token).value();
}

// Pushes `ids` one at a time; returns the deltas (Flush's last).
std::vector<std::string> Deltas(const std::vector<int32_t>& ids, bool skip_special = false) {
  IncrementalDetokenizer detok(V3(), skip_special);
  std::vector<std::string> deltas;
  for (const int32_t id : ids) deltas.push_back(detok.Push(id));
  deltas.push_back(detok.Flush());
  return deltas;
}

TEST(IncrementalDetokenizerTest, HoldsBytesUntilTheCharacterIsComplete) {
  // 😀 is F0 9F 98 80.
  const std::vector<int32_t> ids = {ByteToken('a'),  ByteToken(0xF0), ByteToken(0x9F),
                                    ByteToken(0x98), ByteToken(0x80), ByteToken('b')};
  EXPECT_EQ(Deltas(ids), (std::vector<std::string>{"a", "", "", "", "😀", "b", ""}));
}

TEST(IncrementalDetokenizerTest, IllFormedBytesBecomeReplacementCharacters) {
  const std::string r = "\xEF\xBF\xBD";
  // A lead byte that is then not continued: replaced once its fate is known.
  EXPECT_EQ(Deltas({ByteToken(0xC3), ByteToken('A')}), (std::vector<std::string>{"", r + "A", ""}));
  // A stray continuation byte: replaced at once.
  EXPECT_EQ(Deltas({ByteToken(0x80), ByteToken('A')}), (std::vector<std::string>{r, "A", ""}));
  // A character cut off by the end of the stream: Flush replaces it.
  EXPECT_EQ(Deltas({ByteToken(0xE4), ByteToken(0xB8)}), (std::vector<std::string>{"", "", r}));
}

TEST(IncrementalDetokenizerTest, SkipsSpecialTokensWhenAsked) {
  const std::vector<int32_t> ids = V3().Encode("<｜begin▁of▁sentence｜>Hi<｜User｜>");
  std::string all;
  for (const std::string& d : Deltas(ids, /*skip_special=*/true)) all += d;
  EXPECT_EQ(all, "Hi<｜User｜>");
}

TEST(IncrementalDetokenizerTest, DeltasConcatenateToDecodeAndEndOnCharacters) {
  const std::string texts[] = {
      "😀½𝔘𝔫𝔦𝔠𝔬𝔡𝔢 — 你好，世界！🇺🇸👨‍👩‍👧",
      "ελληνικά हिन्दी ก่อน",
      "<｜User｜>mixed 😀<｜Assistant｜>",
  };
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = V3().Encode(text);
    std::string all;
    for (const std::string& d : Deltas(ids)) {
      EXPECT_TRUE(tokenizer::IsValidUtf8(d)) << ::testing::PrintToString(d);
      all += d;
    }
    EXPECT_EQ(all, V3().Decode(ids));
    EXPECT_EQ(all, text);
  }
}

}  // namespace
}  // namespace dsv3::tokenizer_detokenizer_test
