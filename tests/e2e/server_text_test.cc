// The daemon on the tests' smoke model (random weights, the real DeepSeek-V3 tokenizer and its
// 129,280-token vocabulary): text and chat streaming, tokenization, and the clients
// (dsv3-client, the Python example) as processes.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/validation.h"
#include "tests/e2e/server_process.h"
#include "tests/smoke_model.h"

namespace dsv3::testing::server_text_test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class ServerTextTest : public SharedServerTest<ServerTextTest> {
 protected:
  static void SetUpTestSuite() {
    auto model = EnsureSmokeModel(SmokeCacheDir(), DSV3_TOKENIZER_DIR);
    ASSERT_TRUE(model.ok()) << model.status();
    StartSharedServer({"--model=" + *model, "--num-kv-blocks=256", "--kv-block-size=16"});
  }
};

TEST_F(ServerTextTest, SmokeModelIsMarked) {
  auto stub = server_->Stub();
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
  EXPECT_TRUE(info.is_smoke_model());
  EXPECT_TRUE(info.has_tokenizer());
  EXPECT_EQ(info.architecture().vocab_size(), 129280);
  EXPECT_EQ(info.architecture().weight_format(), "bf16");
  EXPECT_THAT(server_->log(), HasSubstr("SMOKE MODEL"));
}

TEST_F(ServerTextTest, TextDeltasConcatenateToTheFullText) {
  auto stub = server_->Stub();
  v1::GenerateRequest request;
  request.set_text("The quick brown fox");
  request.mutable_sampling()->set_max_tokens(64);
  request.mutable_sampling()->set_seed(7);
  request.mutable_sampling()->set_ignore_eos(true);
  const StreamResult r = ReadGenerate(*stub, request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.ids.size(), 64u);
  for (const std::string& delta : r.text_deltas) {
    EXPECT_TRUE(server::CheckUtf8(delta, "delta").ok()) << "a delta ends inside a character";
  }
  grpc::ClientContext context;
  v1::DetokenizeRequest detok;
  detok.mutable_token_ids()->Add(r.ids.begin(), r.ids.end());
  detok.set_skip_special_tokens(true);
  v1::DetokenizeResponse full;
  ASSERT_TRUE(stub->Detokenize(&context, detok, &full).ok());
  EXPECT_EQ(r.text, full.text());

  // Same seed, same output.
  const StreamResult again = ReadGenerate(*stub, request);
  EXPECT_EQ(again.ids, r.ids);
}

TEST_F(ServerTextTest, TokenizeRoundTrip) {
  auto stub = server_->Stub();
  grpc::ClientContext c1, c2;
  v1::TokenizeRequest tok;
  tok.set_text("Hello, world! 你好");
  v1::TokenizeResponse ids;
  ASSERT_TRUE(stub->Tokenize(&c1, tok, &ids).ok());
  ASSERT_GT(ids.token_ids_size(), 3);
  v1::DetokenizeRequest detok;
  *detok.mutable_token_ids() = ids.token_ids();
  v1::DetokenizeResponse text;
  ASSERT_TRUE(stub->Detokenize(&c2, detok, &text).ok());
  EXPECT_EQ(text.text(), "Hello, world! 你好");

  grpc::ClientContext c3;
  tok.set_text("bad \xC3");
  EXPECT_EQ(stub->Tokenize(&c3, tok, &ids).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Bug 9: Detokenize rejected ids in [128815, 129280) that Generate accepts as a prompt and can
// sample. Both follow the model's vocabulary; ids the tokenizer does not know decode to nothing.
TEST_F(ServerTextTest, IdsBeyondTheTokenizerDecodeToNothingInDetokenizeAndGenerate) {
  auto stub = server_->Stub();
  grpc::ClientContext c1;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&c1, {}, &info).ok());
  const int32_t model_vocab = static_cast<int32_t>(info.architecture().vocab_size());
  ASSERT_EQ(model_vocab, 129280);

  grpc::ClientContext c2;
  v1::TokenizeRequest tok;
  tok.set_text("Hello");
  v1::TokenizeResponse hello;
  ASSERT_TRUE(stub->Tokenize(&c2, tok, &hello).ok());
  v1::DetokenizeRequest detok;
  *detok.mutable_token_ids() = hello.token_ids();
  for (int32_t id : {128815, 129092, model_vocab - 1}) detok.add_token_ids(id);
  grpc::ClientContext c3;
  v1::DetokenizeResponse text;
  const grpc::Status st = stub->Detokenize(&c3, detok, &text);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(text.text(), "Hello");

  detok.add_token_ids(model_vocab);
  grpc::ClientContext c4;
  const grpc::Status outside = stub->Detokenize(&c4, detok, &text);
  EXPECT_EQ(outside.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(outside.error_message(),
              HasSubstr("token_ids[" + std::to_string(detok.token_ids_size() - 1) + "] = 129280 "
                        "is outside the vocabulary [0, 129280)"));

  // The same ids as a prompt: accepted, and they add no text to the prompt.
  v1::GenerateRequest request = GreedyIds({128815, 129092, model_vocab - 1}, 4);
  request.set_return_text(true);
  const StreamResult r = ReadGenerate(*stub, request);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids.size(), 4u);
}

TEST_F(ServerTextTest, ChatStreamsBothTemplates) {
  auto stub = server_->Stub();
  for (v1::ChatTemplate t : {v1::CHAT_TEMPLATE_V3, v1::CHAT_TEMPLATE_R1}) {
    v1::ChatRequest request;
    request.set_template_(t);
    auto* m = request.add_messages();
    m->set_role("user");
    m->set_content("Why is the sky blue?");
    request.mutable_sampling()->set_max_tokens(24);
    request.mutable_sampling()->set_seed(1);
    request.set_return_token_ids(true);
    grpc::ClientContext context;
    auto reader = stub->Chat(&context, request);
    v1::ChatResponse response;
    std::string content, reasoning;
    int ids = 0;
    v1::ChatResponse last;
    while (reader->Read(&response)) {
      content += response.content();
      reasoning += response.reasoning_content();
      ids += response.token_ids_size();
      last = response;
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_GT(ids, 0);
    EXPECT_NE(last.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_EQ(last.usage().completion_tokens(), ids);
    if (t == v1::CHAT_TEMPLATE_R1) {
      // The R1 prompt opens <think>: random output without </think> is all reasoning.
      EXPECT_FALSE(reasoning.empty());
    } else {
      EXPECT_TRUE(reasoning.empty());
    }
  }
  v1::ChatRequest bad;
  bad.add_messages()->set_role("wizard");
  grpc::ClientContext context;
  auto reader = stub->Chat(&context, bad);
  v1::ChatResponse response;
  EXPECT_FALSE(reader->Read(&response));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("messages[0].role 'wizard'"));
}

TEST_F(ServerTextTest, DsvClient) {
  CommandResult r = RunCommand(Client("--prompt 'Hello there' --max-new-tokens 12 --seed 3"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());

  r = RunCommand(Client("--prompt-ids 0,100,200 --max-new-tokens 8 --temperature 0 --ignore-eos"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::MatchesRegex("[0-9]+( [0-9]+){7}\n"));

  r = RunCommand(Client("--chat --template r1 --prompt 'Think' --max-new-tokens 8"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("[reasoning]\n"));

  r = RunCommand(Client("--health"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");

  r = RunCommand(Client("--model-info"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"is_smoke_model\": true"));

  r = RunCommand(Client("--prompt hi --temperature -1"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err, "error: INVALID_ARGUMENT: sampling.temperature must be >= 0, got -1\n");

  r = RunCommand(Client("--prompt-ids 0,999999"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, StartsWith("error: INVALID_ARGUMENT: prompt token_ids[1] = 999999"));
}

TEST_F(ServerTextTest, PythonExample) {
  const std::string run =
      TestDataPath("../../examples/python/run.sh") + " --server " + server_->address();
  CommandResult r = RunCommand(run + " --prompt 'Hello from Python' --max-new-tokens 8 --seed 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("completion tokens"));

  r = RunCommand(run + " --prompt Hi --chat --template r1 --max-new-tokens 6");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("[reasoning]"));

  r = RunCommand(run + " --prompt-ids 0,100,200 --max-new-tokens 5 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::MatchesRegex("[0-9]+( [0-9]+){4}\n"));

  r = RunCommand(run + " --prompt-ids 0,999999");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, StartsWith("error: INVALID_ARGUMENT: prompt token_ids[1] = 999999"));
}

}  // namespace
}  // namespace dsv3::testing::server_text_test
