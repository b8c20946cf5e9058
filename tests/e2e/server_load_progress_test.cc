// Issue 17, loading: the server logs every shard it reads (shard i/N, bytes, GB/s, ETA), exports
// the load's progress on /metrics, and says NOT_SERVING (gRPC health) and 503 (HTTP /health)
// until the model is loaded.
#include <chrono>
#include <filesystem>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/e2e/server_process.h"
#include "tests/smoke_model.h"

namespace dsv3::testing::server_load_progress_test {
namespace {

using Health = grpc::health::v1::HealthCheckResponse;

int CountShards(const std::string& dir) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    n += entry.path().extension() == ".safetensors";
  }
  return n;
}

TEST(ServerLoadProgressTest, LogsEveryShardAndExportsTheLoadOnMetrics) {
  const std::string model = FixturePath("ragged-fp8");
  const int files = CountShards(model);
  ASSERT_GE(files, 2) << "the test needs a sharded checkpoint";
  ServerProcess server({"--model=" + model, "--num-kv-blocks=64", "--kv-block-size=16"});
  ASSERT_TRUE(server.WaitServing()) << server.log();

  const std::string log = server.log();
  const std::regex line(
      R"(loading: shard (\d+)/(\d+) (\S+\.safetensors) read: [0-9.]+ [MG]B in )"
      R"([0-9.]+ s \([0-9.]+ GB/s\); [0-9.]+ [MG]B of [0-9.]+ [MG]B \([0-9.]+%\), )"
      R"([0-9.]+ GB/s overall, ETA \d+ s)");
  std::set<int> seen;
  std::set<std::string> names;
  int total = 0;
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it) {
    seen.insert(std::stoi((*it)[1]));
    total = std::stoi((*it)[2]);
    names.insert((*it)[3]);
  }
  // Every shard the model reads is logged once, numbered 1..N.
  ASSERT_GE(total, 2) << log;
  EXPECT_LE(total, files);
  EXPECT_EQ(static_cast<int>(seen.size()), total) << log;
  EXPECT_EQ(*seen.begin(), 1);
  EXPECT_EQ(*seen.rbegin(), total);
  EXPECT_EQ(static_cast<int>(names.size()), total);
  EXPECT_THAT(log, ::testing::HasSubstr("loading: read "));

  EXPECT_EQ(server.Metric("dsv3_load_complete"), 1);
  const double read = server.Metric("dsv3_load_bytes_total");
  EXPECT_GT(read, 0);
  EXPECT_EQ(read, server.Metric("dsv3_load_bytes_expected"));
  EXPECT_EQ(server.Metric("dsv3_load_shards_done"), total);
  EXPECT_EQ(server.Metric("dsv3_load_shards_total"), total);
  EXPECT_GT(server.Metric("dsv3_load_seconds"), 0);
}

TEST(ServerLoadProgressTest, NotServingUntilTheModelIsLoaded) {
  auto model = EnsureSmokeModel(SmokeCacheDir(), DSV3_TOKENIZER_DIR);
  ASSERT_TRUE(model.ok()) << model.status();
  ServerProcess server({"--model=" + *model, "--num-kv-blocks=64", "--kv-block-size=16"},
                       /*http=*/true);
  httplib::Client http("127.0.0.1", server.http_port());
  // "loaded <dir> in N s" is logged before health turns SERVING, so: a check that starts
  // before that line must say NOT_SERVING, and one that says SERVING must end after it.
  auto loaded = [&] { return server.log().find("loaded " + *model + " in") != std::string::npos; };
  int not_serving_while_loading = 0, http_503_while_loading = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool serving = false;
  while (!serving && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(server.Running()) << server.log();
    const bool loaded_before = loaded();
    const auto health = server.Health();
    if (health == Health::SERVING) {
      EXPECT_TRUE(loaded()) << "SERVING before the model was loaded:\n" << server.log();
      serving = true;
    } else if (health.has_value() && !loaded_before) {
      EXPECT_EQ(*health, Health::NOT_SERVING);
      ++not_serving_while_loading;
    }
    if (!loaded_before) {
      auto response = http.Get("/health");
      if (response && !loaded()) {
        EXPECT_EQ(response->status, 503);
        ++http_503_while_loading;
      }
    }
  }
  ASSERT_TRUE(serving) << server.log();
  EXPECT_GT(not_serving_while_loading, 0) << "never asked while loading:\n" << server.log();
  EXPECT_GT(http_503_while_loading, 0);
  // The weight load finished (its summary line) before the server said SERVING.
  EXPECT_THAT(server.log(), ::testing::HasSubstr("loading: read "));
}

}  // namespace
}  // namespace dsv3::testing::server_load_progress_test
