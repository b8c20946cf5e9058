// The daemon with no --model serves the embedded demo model (tools/demo-model): a trained
// DeepSeek-V3-architecture model whose greedy answers are English words of its training text.
// "Words of its training text" is checked against the vocabulary of the held-out Brown documents
// (tools/demo-model/heldout_ids.txt decoded with the model's own tokenizer): a random model's
// output, a soup of sub-word pieces, fails it.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <set>

#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/demo_model.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_demo_model_test {
namespace {

using ::testing::HasSubstr;

// Lower-cased runs of letters (an apostrophe inside a word is kept: "don't").
std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> words;
  std::string cur;
  for (const char c : text + " ") {
    if (std::isalpha(static_cast<unsigned char>(c)) || (c == '\'' && !cur.empty())) {
      cur += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!cur.empty()) {
      while (!cur.empty() && cur.back() == '\'') cur.pop_back();
      words.push_back(cur);
      cur.clear();
    }
  }
  return words;
}

// Every word of the held-out Brown documents.
std::set<std::string> HeldOutVocabulary() {
  auto tokenizer = Tokenizer::Load(DemoModelDir());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::set<std::string> vocabulary;
  for (const auto& ids : HeldOutWindows(SIZE_MAX, SIZE_MAX)) {
    for (std::string& w : Words((*tokenizer)->Decode(ids, /*skip_special_tokens=*/true))) {
      vocabulary.insert(std::move(w));
    }
  }
  return vocabulary;
}

class ServerDemoModelTest : public SharedServerTest<ServerDemoModelTest> {
 protected:
  static void SetUpTestSuite() { StartSharedServer({"--num-kv-blocks=256", "--kv-block-size=16"}); }
};

TEST_F(ServerDemoModelTest, DefaultIsTheTrainedFp8DemoModel) {
  auto stub = server_->Stub();
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
  EXPECT_FALSE(info.is_smoke_model());
  EXPECT_TRUE(info.has_tokenizer());
  EXPECT_EQ(info.architecture().vocab_size(), 4096);
  EXPECT_EQ(info.architecture().weight_format(), "fp8");
  EXPECT_THAT(server_->log(), HasSubstr("embedded demo model"));
  EXPECT_THAT(server_->log(), ::testing::Not(HasSubstr("SMOKE MODEL")));
}

TEST_F(ServerDemoModelTest, PlainPromptIsContinuedWithWordsOfItsTrainingText) {
  const std::set<std::string> vocabulary = HeldOutVocabulary();
  ASSERT_GT(vocabulary.size(), 3000u);
  const CommandResult r = RunCommand(
      Client("--prompt 'The jury said' --max-new-tokens 40 --temperature 0"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> words = Words(r.out);
  ASSERT_GE(words.size(), 15u) << r.out;
  const auto known = std::count_if(words.begin(), words.end(),
                                   [&](const std::string& w) { return vocabulary.contains(w); });
  EXPECT_GE(known * 10, static_cast<long>(words.size()) * 9)
      << known << " of " << words.size() << " words are words of the held-out text: " << r.out;
}

TEST_F(ServerDemoModelTest, ChatTemplatesGiveAnAnswerThatEnds) {
  // V3: the answer itself, ended by EOS well before the limit.
  CommandResult r = RunCommand(
      Client("--chat --prompt 'What does lighthouse mean?' --max-new-tokens 80 --temperature 0"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(Words(r.out).size(), 4u) << r.out;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("<｜"))) << "special tokens leaked: " << r.out;
  // R1: reasoning first, then the answer.
  r = RunCommand(Client("--chat --template r1 --prompt 'What does river mean?' "
                        "--max-new-tokens 120 --temperature 0"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("[reasoning]\n")) << r.out;
  const size_t answer = r.out.find("\n[answer]\n");
  ASSERT_NE(answer, std::string::npos) << "the reasoning never ended: " << r.out;
  EXPECT_GE(Words(r.out.substr(answer)).size(), 4u) << r.out;
}

}  // namespace
}  // namespace dsv3::testing::server_demo_model_test
