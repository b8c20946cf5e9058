// What gRPC gained beside the HTTP API: n > 1 choices in one call (responses tagged by index,
// each choice ending with its own finish reason and usage), logprobs with each token's bytes,
// and the request id taken from x-request-id metadata and echoed in the response metadata.
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_grpc_choices_test {
namespace {

class ServerGrpcChoicesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess({"--num-kv-blocks=512", "--kv-block-size=16"});
    ASSERT_TRUE(server_->WaitServing(std::chrono::seconds(300))) << server_->log();
  }
  static void TearDownTestSuite() { delete server_; }
  static ServerProcess* server_;
};
ServerProcess* ServerGrpcChoicesTest::server_ = nullptr;

TEST_F(ServerGrpcChoicesTest, ChatWithTwoChoicesStreamsBothAndEndsAfterTheLast) {
  auto stub = server_->Stub();
  v1::ChatRequest request;
  v1::ChatMessage* m = request.add_messages();
  m->set_role("user");
  m->set_content("Tell me about the sea.");
  request.set_n(2);
  request.mutable_sampling()->set_seed(3);
  request.mutable_sampling()->set_max_tokens(12);
  request.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext context;
  auto reader = stub->Chat(&context, request);
  std::map<int, std::string> text;
  std::map<int, int> completion_tokens;
  v1::ChatResponse response;
  while (reader->Read(&response)) {
    text[response.index()] += response.content();
    if (response.has_usage()) {
      EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_LENGTH);
      completion_tokens[response.index()] = response.usage().completion_tokens();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(text.size(), 2u);
  EXPECT_NE(text[0], text[1]);  // seeds 3 and 4
  EXPECT_EQ(completion_tokens, (std::map<int, int>{{0, 12}, {1, 12}}));
}

TEST_F(ServerGrpcChoicesTest, GenerateNIsValidated) {
  auto stub = server_->Stub();
  v1::GenerateRequest request;
  request.set_text("Hi");
  request.set_n(17);
  const StreamResult r = ReadGenerate(*stub, request);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), ::testing::HasSubstr("n must be in [1, 16]"));
}

TEST_F(ServerGrpcChoicesTest, LogprobsCarryTokenBytes) {
  auto stub = server_->Stub();
  v1::GenerateRequest request;
  request.set_text("The cat sat on the");
  request.mutable_sampling()->set_max_tokens(6);
  request.mutable_sampling()->set_temperature(0);
  request.mutable_sampling()->set_logprobs(2);
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  std::string text, joined;
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    text += response.text();
    for (const v1::TokenLogprob& lp : response.logprobs()) {
      joined += lp.token();
      ASSERT_EQ(lp.top_size(), 2);
      EXPECT_EQ(lp.top(0).token(), lp.token());  // greedy: the chosen token is the top one
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(joined, text);
}

TEST_F(ServerGrpcChoicesTest, RequestIdComesFromMetadataAndIsEchoed) {
  auto stub = server_->Stub();
  v1::GenerateRequest request;
  request.set_text("Hi");
  request.mutable_sampling()->set_max_tokens(2);
  grpc::ClientContext context;
  context.AddMetadata("x-request-id", "trace-42");
  const StreamResult r = ReadGenerate(*stub, request, &context);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto& metadata = context.GetServerInitialMetadata();
  auto it = metadata.find("x-request-id");
  ASSERT_NE(it, metadata.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "trace-42");
  // The request log line names the id the client sent (text format: key=value fields).
  EXPECT_THAT(server_->log(), ::testing::HasSubstr("request_id=trace-42 method=Generate"));
}

}  // namespace
}  // namespace dsv3::testing::server_grpc_choices_test
