// The daemon in token-id mode (tiny-fp8 fixture, no tokenizer): streamed ids equal the offline
// engine's, cancellation and deadlines free KV blocks, overload is refused, bad requests get
// precise errors while other streams go on, and SIGTERM drains and exits 0.
#include <atomic>
#include <future>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_generate_test {
namespace {

using ::testing::HasSubstr;
using Health = grpc::health::v1::HealthCheckResponse;

const std::vector<int32_t> kPrompt = {0, 17, 99, 512, 3};

std::vector<std::string> TinyArgs() {
  // 512 blocks of 16: a context of 8192 tokens, so that the long streams below outlast the
  // cancels, deadlines and grace periods aimed at them.
  return {"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=512", "--kv-block-size=16"};
}

// dsv3-generate: the offline, single-sequence greedy reference.
std::vector<int32_t> OfflineIds(const std::vector<int32_t>& prompt, int max_tokens) {
  const CommandResult r =
      RunCommand(ToolPath("dsv3-generate") + " --model " + FixturePath("tiny-fp8") +
                 " --ignore-eos --threads 2 --max-new-tokens " + std::to_string(max_tokens) +
                 " --prompt-ids " + absl::StrJoin(prompt, ","));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<int32_t> ids;
  for (absl::string_view s : absl::StrSplit(r.out, ' ', absl::SkipWhitespace())) {
    int32_t id;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(s), &id)) ids.push_back(id);
  }
  return ids;
}

class ServerGenerateTest : public SharedServerTest<ServerGenerateTest> {
 protected:
  static void SetUpTestSuite() { StartSharedServer(TinyArgs(), std::chrono::seconds(120)); }
};

TEST_F(ServerGenerateTest, ModelInfo) {
  auto stub = server_->Stub();
  grpc::ClientContext context;
  v1::ModelInfo info;
  const grpc::Status status = stub->GetModelInfo(&context, {}, &info);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_EQ(info.architecture().model_type(), "deepseek_v3");
  EXPECT_EQ(info.architecture().vocab_size(), 1024);
  EXPECT_EQ(info.architecture().weight_format(), "fp8");
  EXPECT_FALSE(info.has_tokenizer());
  EXPECT_FALSE(info.is_smoke_model());
  EXPECT_EQ(info.kv_capacity_blocks(), 512);
  EXPECT_EQ(info.kv_block_size(), 16);
  EXPECT_EQ(info.tensor_parallel_size(), 1);
  EXPECT_GT(info.max_context_tokens(), 0);
  EXPECT_EQ(info.api_version(), "dsv3.v1");
}

TEST_F(ServerGenerateTest, StreamedIdsEqualOffline) {
  const std::vector<int32_t> expected = OfflineIds(kPrompt, 24);
  ASSERT_EQ(expected.size(), 24u);
  auto stub = server_->Stub();
  // Several at once: batching must not change anyone's tokens.
  std::vector<std::future<StreamResult>> streams;
  for (int i = 0; i < 6; ++i) {
    streams.push_back(std::async(std::launch::async,
                                 [&] { return ReadGenerate(*stub, GreedyIds(kPrompt, 24)); }));
  }
  for (auto& f : streams) {
    const StreamResult r = f.get();
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.ids, expected);
    EXPECT_TRUE(r.text.empty());  // no tokenizer: ids only
    EXPECT_EQ(r.last.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(r.last.usage().prompt_tokens(), 5);
    EXPECT_EQ(r.last.usage().completion_tokens(), 24);
  }
}

TEST_F(ServerGenerateTest, TextNeedsATokenizer) {
  auto stub = server_->Stub();
  v1::GenerateRequest r;
  r.set_text("hello");
  const StreamResult result = ReadGenerate(*stub, r);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(result.status.error_message(), HasSubstr("needs a tokenizer"));
  grpc::ClientContext context;
  v1::TokenizeResponse tokens;
  EXPECT_EQ(stub->Tokenize(&context, {}, &tokens).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

bool WaitForBlocksFreed(ServerProcess& server, std::chrono::seconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (server.Metric("dsv3_kv_blocks_used") == 0 && server.Metric("dsv3_active_streams") == 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST_F(ServerGenerateTest, CancelFreesBlocks) {
  auto stub = server_->Stub();
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyIds(kPrompt, 8000));
  v1::GenerateResponse response;
  int tokens = 0;
  while (tokens < 5 && reader->Read(&response)) tokens += response.token_ids_size();
  ASSERT_GE(tokens, 5);
  EXPECT_GT(server_->Metric("dsv3_kv_blocks_used"), 0);
  context.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForBlocksFreed(*server_, std::chrono::seconds(5))) << server_->Metrics();
}

TEST_F(ServerGenerateTest, DeadlineExceededFreesBlocks) {
  auto stub = server_->Stub();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  const StreamResult r = ReadGenerate(*stub, GreedyIds(kPrompt, 8000), &context);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitForBlocksFreed(*server_, std::chrono::seconds(5))) << server_->Metrics();
}

TEST_F(ServerGenerateTest, BadRequestsGetPreciseErrorsWhileOthersStream) {
  const std::vector<int32_t> expected = OfflineIds(kPrompt, 200);
  auto stub = server_->Stub();
  auto good =
      std::async(std::launch::async, [&] { return ReadGenerate(*stub, GreedyIds(kPrompt, 200)); });

  struct Bad {
    std::function<void(v1::GenerateRequest&)> mutate;
    grpc::StatusCode code;
    const char* message;
  };
  using C = grpc::StatusCode;
  const std::vector<Bad> bad = {
      {[](auto& r) { r.clear_prompt(); }, C::INVALID_ARGUMENT, "prompt is not set"},
      {[](auto& r) { r.mutable_token_ids()->clear_ids(); }, C::INVALID_ARGUMENT,
       "prompt token_ids is empty"},
      {[](auto& r) { r.mutable_token_ids()->set_ids(2, 1024); }, C::INVALID_ARGUMENT,
       "prompt token_ids[2] = 1024 is outside the vocabulary [0, 1024)"},
      {[](auto& r) { r.mutable_token_ids()->set_ids(0, -5); }, C::INVALID_ARGUMENT,
       "prompt token_ids[0] = -5 is outside the vocabulary"},
      {[](auto& r) { r.mutable_sampling()->set_max_tokens(10000000); }, C::INVALID_ARGUMENT,
       "exceeds the context limit of 8192 tokens (--max-model-len)"},
      {[](auto& r) { r.mutable_sampling()->set_max_tokens(0); }, C::INVALID_ARGUMENT,
       "sampling.max_tokens must be >= 1, got 0"},
      {[](auto& r) { r.mutable_sampling()->set_temperature(-0.5); }, C::INVALID_ARGUMENT,
       "sampling.temperature must be >= 0, got -0.5"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(1.5); }, C::INVALID_ARGUMENT,
       "sampling.top_p must be in (0, 1], got 1.5"},
      {[](auto& r) { r.mutable_sampling()->set_top_k(-3); }, C::INVALID_ARGUMENT, "sampling.top_k"},
      {[](auto& r) { r.mutable_sampling()->set_min_p(-0.1f); }, C::INVALID_ARGUMENT,
       "sampling.min_p must be in [0, 1]"},
      {[](auto& r) { r.mutable_sampling()->set_repetition_penalty(-1); }, C::INVALID_ARGUMENT,
       "sampling.repetition_penalty must be > 0"},
      {[](auto& r) { r.mutable_sampling()->set_presence_penalty(2.5); }, C::INVALID_ARGUMENT,
       "sampling.presence_penalty must be in [-2, 2]"},
      {[](auto& r) { r.mutable_sampling()->set_frequency_penalty(-3); }, C::INVALID_ARGUMENT,
       "sampling.frequency_penalty must be in [-2, 2]"},
      {[](auto& r) { r.mutable_sampling()->set_min_tokens(17); }, C::INVALID_ARGUMENT,
       "sampling.min_tokens must be <= max_tokens"},
      {[](auto& r) { r.mutable_sampling()->set_logprobs(50); }, C::INVALID_ARGUMENT,
       "sampling.logprobs must be in [0, 20], got 50"},
      {[](auto& r) { r.mutable_sampling()->add_stop_token_ids(4096); }, C::INVALID_ARGUMENT,
       "sampling.stop_token_ids[0] = 4096 is outside the vocabulary"},
      {[](auto& r) {
         for (int i = 0; i < 20; ++i) r.mutable_sampling()->add_stop("x");
       },
       C::INVALID_ARGUMENT, "sampling.stop has 20 strings; at most 16"},
      {[](auto& r) { r.mutable_sampling()->add_stop("\xFF"); }, C::INVALID_ARGUMENT,
       "sampling.stop[0] is not valid UTF-8"},
      {[](auto& r) { r.set_text("caf\xE9"); }, C::FAILED_PRECONDITION, "needs a tokenizer"},
      {[](auto& r) { r.mutable_sampling()->add_stop("end"); }, C::FAILED_PRECONDITION,
       "sampling.stop (stop strings) needs a tokenizer"},
      {[](auto& r) { r.set_return_text(true); }, C::FAILED_PRECONDITION,
       "return_text needs a tokenizer"},
      {[](auto& r) { r.set_return_token_ids(false); }, C::INVALID_ARGUMENT,
       "return_token_ids and return_text are both false"},
      {[](auto& r) { r.set_request_id(std::string(300, 'q')); }, C::INVALID_ARGUMENT,
       "request_id is 300 bytes"},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(bad[i].message);
    v1::GenerateRequest request = GreedyIds(kPrompt, 16);
    bad[i].mutate(request);
    const StreamResult r = ReadGenerate(*stub, request);
    EXPECT_EQ(r.status.error_code(), bad[i].code) << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), HasSubstr(bad[i].message));
    EXPECT_EQ(r.responses, 0);
  }
  grpc::ClientContext context;
  v1::DetokenizeRequest detok;
  v1::DetokenizeResponse text;
  EXPECT_EQ(stub->Detokenize(&context, detok, &text).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  const StreamResult r = good.get();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids, expected);
}

// The count of finished calls of `method` with gRPC `code`, from /metrics (0 when absent).
int64_t CallCount(const ServerProcess& server, const std::string& method, const std::string& code) {
  const std::string key = ",method=\"" + method + "\",code=\"" + code + "\"} ";
  const std::string text = server.Metrics();
  const size_t at = text.find(key);
  int64_t n = 0;
  if (at != std::string::npos) {
    const size_t begin = at + key.size();
    EXPECT_TRUE(absl::SimpleAtoi(text.substr(begin, text.find('\n', begin) - begin), &n));
  }
  return n;
}

// Bug 8: in a deadline storm most calls were counted and logged as CANCELLED (157 of 206): the
// client's deadline timer fires first and resets the stream before the server's deadline.
TEST(ServerDeadline, DeadlineStormIsCountedAsDeadlineExceeded) {
  ServerProcess server(TinyArgs());
  ASSERT_TRUE(server.WaitServing()) << server.log();
  auto stub = server.Stub();
  constexpr int kCalls = 48;
  std::vector<std::future<grpc::StatusCode>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(300 + 10 * i));
      return ReadGenerate(*stub, GreedyIds(kPrompt, 8000), &context).status.error_code();
    }));
  }
  for (auto& f : calls) EXPECT_EQ(f.get(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server counts a call when its reactor finishes it, after the client has given up.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (CallCount(server, "Generate", "DEADLINE_EXCEEDED") +
                 CallCount(server, "Generate", "CANCELLED") <
             kCalls &&
         std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(CallCount(server, "Generate", "DEADLINE_EXCEEDED"), kCalls) << server.Metrics();
  EXPECT_EQ(CallCount(server, "Generate", "CANCELLED"), 0) << server.Metrics();
}

// A server that runs one request and queues one more: a burst gets RESOURCE_EXHAUSTED, not a
// hang, and the admitted requests complete.
TEST(ServerOverload, BurstGetsResourceExhausted) {
  std::vector<std::string> args = TinyArgs();
  args.push_back("--max-queued-requests=1");
  args.push_back("--max-running-seqs=1");
  args.push_back("--max-batched-tokens=64");
  ServerProcess server(args);
  ASSERT_TRUE(server.WaitServing()) << server.log();
  auto stub = server.Stub();
  std::vector<std::future<StreamResult>> calls;
  for (int i = 0; i < 12; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      return ReadGenerate(*stub, GreedyIds(kPrompt, 300), &context);
    }));
  }
  int ok = 0, exhausted = 0;
  for (auto& f : calls) {
    const StreamResult r = f.get();
    if (r.status.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << r.status.error_message();
      // The message names the flags that set the limit it hit.
      EXPECT_THAT(r.status.error_message(), HasSubstr("--max-queued-requests"));
      EXPECT_THAT(r.status.error_message(), HasSubstr("--max-running-seqs"));
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
  EXPECT_THAT(server.Metrics(), HasSubstr("code=\"RESOURCE_EXHAUSTED\""));
}

// SIGTERM: health NOT_SERVING, new calls refused, in-flight calls aborted after the grace
// period, exit 0 within it.
TEST(ServerDrain, SigtermDrainsAndExitsZero) {
  std::vector<std::string> args = TinyArgs();
  args.push_back("--grace-period-s=2");
  ServerProcess server(args);
  ASSERT_TRUE(server.WaitServing()) << server.log();
  auto stub = server.Stub();

  // A short call that finishes inside the grace period, and one that cannot.
  grpc::ClientContext long_context;
  auto long_reader = stub->Generate(&long_context, GreedyIds(kPrompt, 8000));
  v1::GenerateResponse response;
  ASSERT_TRUE(long_reader->Read(&response));

  const auto start = std::chrono::steady_clock::now();
  server.SendSignal(SIGTERM);
  bool saw_not_serving = false;
  for (int i = 0; i < 100 && !saw_not_serving; ++i) {
    saw_not_serving = server.Health() == Health::NOT_SERVING;
    if (!saw_not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(saw_not_serving);
  const StreamResult refused = ReadGenerate(*stub, GreedyIds(kPrompt, 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("shutting down"));

  while (long_reader->Read(&response)) {
  }
  EXPECT_EQ(long_reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.SignalAndWait(0, std::chrono::seconds(10)), 0) << server.log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(6));
}

// Bug 4: SIGHUP with active streams killed the server at once (the default action), with
// nothing logged. It drains like SIGTERM.
TEST(ServerDrain, SighupDrainsLikeSigterm) {
  std::vector<std::string> args = TinyArgs();
  args.push_back("--grace-period-s=2");
  ServerProcess server(args);
  ASSERT_TRUE(server.WaitServing()) << server.log();
  auto stub = server.Stub();
  grpc::ClientContext short_context;
  auto short_reader = stub->Generate(&short_context, GreedyIds(kPrompt, 20));
  grpc::ClientContext long_context;
  auto long_reader = stub->Generate(&long_context, GreedyIds(kPrompt, 8000));
  v1::GenerateResponse response;
  ASSERT_TRUE(long_reader->Read(&response));

  server.SendSignal(SIGHUP);
  while (short_reader->Read(&response)) {
  }
  EXPECT_TRUE(short_reader->Finish().ok());  // finished within the grace period
  while (long_reader->Read(&response)) {
  }
  EXPECT_EQ(long_reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.SignalAndWait(0, std::chrono::seconds(10)), 0) << server.log();
  EXPECT_THAT(server.log(), HasSubstr("received SIGHUP: draining"));
}

// Bug 14: a second SIGTERM did not shorten the 30 s drain. It stops at once: the streams still
// open end with UNAVAILABLE and the process exits 1.
TEST(ServerDrain, SecondSigtermStopsAtOnceAndExitsOne) {
  ServerProcess server(TinyArgs());  // the default grace period, 30 s
  ASSERT_TRUE(server.WaitServing()) << server.log();
  auto stub = server.Stub();
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyIds(kPrompt, 8000));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));

  server.SendSignal(SIGTERM);
  bool saw_not_serving = false;
  for (int i = 0; i < 100 && !saw_not_serving; ++i) {
    saw_not_serving = server.Health() == Health::NOT_SERVING;
    if (!saw_not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(saw_not_serving);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(server.SignalAndWait(SIGTERM, std::chrono::seconds(10)), 1) << server.log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(server.log(), HasSubstr("received SIGTERM while draining: stopping now"));
}

}  // namespace
}  // namespace dsv3::testing::server_generate_test
