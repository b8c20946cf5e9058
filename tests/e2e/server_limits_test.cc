// The context limit and the KV cache's size, as an operator meets them (issue 17 part 4): an
// explicit --max-model-len that the model or the KV cache cannot hold stops startup with exit 1
// and a message naming the flags to change; a default limit capped by the KV cache says so in a
// warning; a request past --max-model-len gets INVALID_ARGUMENT (gRPC) and 400 (HTTP) naming it.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_limits_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// tiny-fp8: max_position_embeddings 163840; 4 blocks of 16 tokens hold 64.
CommandResult RunServer(const std::string& flags) {
  return RunCommand("timeout -s KILL 60 " + BinaryPath("server/dsv3-server") + " --model " +
                    FixturePath("tiny-fp8") +
                    " --device cpu --threads 1 --listen 127.0.0.1:0 --metrics-listen '' " + flags);
}

TEST(ServerLimitsTest, MaxModelLenOverTheKvCacheFailsStartupNamingTheFlags) {
  const CommandResult r = RunServer("--num-kv-blocks 4 --kv-block-size 16 --max-model-len 128");
  EXPECT_FALSE(r.signaled) << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, AllOf(HasSubstr("--max-model-len 128"), HasSubstr("(64, sized by "
                                                                       "--num-kv-blocks 4)"),
                           HasSubstr("increase --gpu-memory-utilization, --kv-memory-mb or "
                                     "--num-kv-blocks, or decrease --max-model-len")));
}

TEST(ServerLimitsTest, MaxModelLenOverTheModelFailsStartupNamingTheFlag) {
  const CommandResult r = RunServer("--kv-memory-mb 64 --max-model-len 200000");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, AllOf(HasSubstr("--max-model-len 200000"),
                           HasSubstr("max_position_embeddings (163840")));
}

TEST(ServerLimitsTest, KvCacheCappedDefaultLimitIsAWarningNamingTheFlags) {
  ServerProcess server({"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=4",
                        "--kv-block-size=16"});
  ASSERT_TRUE(server.WaitServing()) << server.log();
  EXPECT_THAT(server.log(), AllOf(HasSubstr("warn"), HasSubstr("the context limit is 64 tokens"),
                                  HasSubstr("--num-kv-blocks 4"), HasSubstr("--max-model-len")));
}

TEST(ServerLimitsTest, CpuBackendSaysTheGpuFlagDoesNotApply) {
  ServerProcess server({"--model=" + FixturePath("tiny-fp8"), "--max-model-len=256"});
  ASSERT_TRUE(server.WaitServing()) << server.log();
  EXPECT_THAT(server.log(),
              AllOf(HasSubstr("--gpu-memory-utilization does not apply to the cpu backend"),
                    HasSubstr("from --kv-memory-mb 1024"),
                    HasSubstr("context limit 256 tokens (--max-model-len)")));
}

TEST(ServerLimitsTest, RequestOverMaxModelLenIsRefusedNamingTheFlag) {
  ServerProcess server({"--model=" + FixturePath("tiny-fp8"), "--kv-memory-mb=16",
                        "--max-model-len=32", "--served-model-name=tiny"},
                       /*http=*/true);
  ASSERT_TRUE(server.WaitServing()) << server.log();

  // gRPC: 5 prompt tokens + 28 > 32.
  auto stub = server.Stub();
  const StreamResult over = ReadGenerate(*stub, GreedyIds({1, 2, 3, 4, 5}, 28));
  EXPECT_EQ(over.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(over.status.error_message(),
              AllOf(HasSubstr("exceeds the context limit of 32 tokens"),
                    HasSubstr("--max-model-len")));
  // Exactly at the limit is served.
  const StreamResult at = ReadGenerate(*stub, GreedyIds({1, 2, 3, 4, 5}, 27));
  EXPECT_TRUE(at.status.ok()) << at.status.error_message();
  EXPECT_EQ(at.ids.size(), 27u);

  // HTTP: the same request through /v1/completions.
  httplib::Client client("127.0.0.1", server.http_port());
  const nlohmann::json body = {
      {"model", "tiny"}, {"prompt", {1, 2, 3, 4, 5}}, {"max_tokens", 28}};
  auto res = client.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  const auto error = nlohmann::json::parse(res->body)["error"];
  EXPECT_THAT(error["message"].get<std::string>(), HasSubstr("--max-model-len"));
}

}  // namespace
}  // namespace dsv3::testing::server_limits_test
