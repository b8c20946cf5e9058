// The tokenizer against Hugging Face's answers (tests/data/tokenizer/golden_*.jsonl, made with
// tokenizers/transformers; see that folder's README): exact ids for every string, Decode and the
// streaming detokenizer back to the text, V3 chat renderings byte for byte. A missing golden
// file fails the test: it is never skipped.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace dsv3::tokenizer_golden_test {
namespace {

using nlohmann::json;

class TokenizerGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(DSV3_TOKENIZER_DIR);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = t->release();
  }
  static void TearDownTestSuite() { delete tokenizer_; }

  static std::vector<json> ReadLines(const std::string& name) {
    const std::string path = dsv3::testing::TestDataPath("tokenizer/" + name);
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << "golden file missing: " << path;
    std::vector<json> lines;
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) lines.push_back(json::parse(line));
    }
    return lines;
  }

  static const Tokenizer* tokenizer_;
};

const Tokenizer* TokenizerGoldenTest::tokenizer_ = nullptr;

TEST_F(TokenizerGoldenTest, EncodeGivesTheExactIds) {
  const std::vector<json> golden = ReadLines("golden_encode.jsonl");
  ASSERT_GE(golden.size(), 300u);
  size_t passed = 0;
  for (const json& g : golden) {
    const std::string text = g["text"];
    const std::vector<int32_t> expected = g["ids"];
    const std::vector<int32_t> ids = tokenizer_->Encode(text);
    EXPECT_EQ(ids, expected) << "text: " << json(text).dump();
    passed += ids == expected;
  }
  std::cout << "encode: " << passed << "/" << golden.size() << " golden strings exact\n";
}

TEST_F(TokenizerGoldenTest, DecodeGivesTheText) {
  const std::vector<json> golden = ReadLines("golden_encode.jsonl");
  ASSERT_FALSE(golden.empty());
  size_t passed = 0;
  for (const json& g : golden) {
    // Hugging Face's own decode when recorded, else the text (byte-level BPE is lossless).
    const std::string expected = g.value("decoded", g["text"].get<std::string>());
    const std::vector<int32_t> ids = g["ids"];
    const std::string text = tokenizer_->Decode(ids);
    EXPECT_EQ(text, expected) << "ids of " << json(g["text"]).dump();
    passed += text == expected;
  }
  std::cout << "decode: " << passed << "/" << golden.size() << " round trips\n";
}

TEST_F(TokenizerGoldenTest, DetokenizerDeltasEndOnCharactersAndConcatenateToDecode) {
  const std::vector<json> golden = ReadLines("golden_encode.jsonl");
  ASSERT_FALSE(golden.empty());
  for (const json& g : golden) {
    const std::vector<int32_t> ids = g["ids"];
    for (const bool skip_special : {false, true}) {
      IncrementalDetokenizer detok(*tokenizer_, skip_special);
      std::string all;
      const auto take = [&](const std::string& delta) {
        EXPECT_TRUE(tokenizer::IsValidUtf8(delta))
            << "delta " << ::testing::PrintToString(delta) << " of " << json(g["text"]).dump();
        all += delta;
      };
      for (const int32_t id : ids) take(detok.Push(id));
      take(detok.Flush());
      EXPECT_EQ(all, tokenizer_->Decode(ids, skip_special)) << json(g["text"]).dump();
    }
  }
}

TEST_F(TokenizerGoldenTest, V3ChatRendersAndEncodesIdentically) {
  const std::vector<json> golden = ReadLines("golden_chat.jsonl");
  ASSERT_FALSE(golden.empty());
  const std::string bos(tokenizer_->TokenBytes(tokenizer_->bos_id()));
  size_t passed = 0;
  for (const json& g : golden) {
    std::vector<ChatMessage> messages;
    for (const json& m : g["messages"]) {
      ChatMessage message;
      message.role = m["role"];
      message.content_is_null = !m.contains("content") || m["content"].is_null();
      if (!message.content_is_null) message.content = m["content"];
      for (const json& call : m.value("tool_calls", json::array())) {
        message.tool_calls.push_back({call.value("type", "function"), call["function"]["name"],
                                      call["function"]["arguments"]});
      }
      messages.push_back(std::move(message));
    }
    absl::StatusOr<std::string> text =
        RenderChat(ChatTemplate::kV3, messages, g["add_generation_prompt"], bos);
    ASSERT_TRUE(text.ok()) << text.status() << " for " << g["messages"].dump();
    const std::string expected_text = g["text"];
    const std::vector<int32_t> expected_ids = g["ids"];
    EXPECT_EQ(*text, expected_text) << g["messages"].dump();
    const std::vector<int32_t> ids = tokenizer_->Encode(*text);
    EXPECT_EQ(ids, expected_ids) << g["messages"].dump();
    passed += *text == expected_text && ids == expected_ids;
  }
  std::cout << "chat: " << passed << "/" << golden.size() << " conversations identical\n";
}

}  // namespace
}  // namespace dsv3::tokenizer_golden_test
