// Load with faults: 64 concurrent clients stream, cancel mid-stream, let deadlines pass and send
// bad requests against one server for a while; afterwards every stream has ended, every KV block
// is back in the pool and the server's RSS is flat (what the first third of the run reached, not
// growing with it). Issue 19 asks for 60 s; that run is recorded in docs/serving.md ("Load"); CI runs 20 s.
// DSV3_LOAD_FAULTS_SECONDS sets the duration.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_load_faults_test {
namespace {

// Under AddressSanitizer the server's RSS is mostly the sanitizer's allocator: its quarantine
// holds up to 256 MB of freed memory and it keeps per-thread caches, and a 20 s run grew 9-12%
// after the first third whatever the quarantine size (measured 2026-12-02 with 256 and 16 MB),
// none of it the server's own. The same test in the plain build checks the bounds.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kRssIsTheServers = false;
#else
constexpr bool kRssIsTheServers = true;
#endif

constexpr int kClients = 64;

int Seconds() {
  const char* s = std::getenv("DSV3_LOAD_FAULTS_SECONDS");
  return s != nullptr ? std::max(1, std::atoi(s)) : 20;
}

// VmRSS of `pid` in KiB (0 when it cannot be read).
int64_t RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      int64_t kib = 0;
      in >> kib;
      return kib;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

// One client action; returns the status code the call ended with.
grpc::StatusCode Act(v1::Inference::Stub& stub, std::mt19937& rng) {
  const std::vector<int32_t> prompt = {static_cast<int32_t>(rng() % 1000), 17, 99,
                                       static_cast<int32_t>(rng() % 1000)};
  grpc::ClientContext context;
  switch (rng() % 4) {
    case 0: {  // a short stream read to the end
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      return ReadGenerate(stub, GreedyIds(prompt, 1 + rng() % 48), &context).status.error_code();
    }
    case 1: {  // cancelled after a few deltas
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      auto reader = stub.Generate(&context, GreedyIds(prompt, 4000));
      v1::GenerateResponse response;
      for (int i = 0, n = 1 + rng() % 8; i < n && reader->Read(&response); ++i) {
      }
      context.TryCancel();
      while (reader->Read(&response)) {
      }
      return reader->Finish().error_code();
    }
    case 2: {  // its deadline passes mid-stream
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(20 + rng() % 300));
      return ReadGenerate(stub, GreedyIds(prompt, 4000), &context).status.error_code();
    }
    default: {  // a bad request: an id outside the vocabulary, or no prompt
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      v1::GenerateRequest bad = GreedyIds(rng() % 2 ? std::vector<int32_t>{1, 1 << 20}
                                                    : std::vector<int32_t>{},
                                          8);
      return ReadGenerate(stub, bad, &context).status.error_code();
    }
  }
}

TEST(ServerLoadFaultsTest, StreamsAndKvBlocksComeBackAndRssIsFlatUnderFaults) {
  const int seconds = Seconds();
  ServerProcess server({"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=2048",
                        "--kv-block-size=16"});
  ASSERT_TRUE(server.WaitServing()) << server.log();

  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::seconds(seconds);
  std::mutex mu;
  std::map<grpc::StatusCode, int64_t> codes;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto stub = server.Stub();  // a channel per client, as separate processes would have
      std::mt19937 rng(c);
      std::map<grpc::StatusCode, int64_t> mine;
      while (std::chrono::steady_clock::now() < end) ++mine[Act(*stub, rng)];
      std::lock_guard lock(mu);
      for (const auto& [code, n] : mine) codes[code] += n;
    });
  }
  // RSS once the first third has warmed every path up, and the peak after it.
  std::this_thread::sleep_until(start + std::chrono::seconds(seconds) / 3);
  const int64_t warm_kib = RssKiB(server.pid());
  int64_t peak_kib = warm_kib;
  while (std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    peak_kib = std::max(peak_kib, RssKiB(server.pid()));
  }
  for (std::thread& t : clients) t.join();

  int64_t calls = 0;
  for (const auto& [code, n] : codes) {
    calls += n;
    EXPECT_THAT(code, ::testing::AnyOf(grpc::StatusCode::OK, grpc::StatusCode::CANCELLED,
                                       grpc::StatusCode::DEADLINE_EXCEEDED,
                                       grpc::StatusCode::INVALID_ARGUMENT))
        << n << " calls ended with code " << code;
  }
  for (const grpc::StatusCode code :
       {grpc::StatusCode::OK, grpc::StatusCode::CANCELLED, grpc::StatusCode::DEADLINE_EXCEEDED,
        grpc::StatusCode::INVALID_ARGUMENT}) {
    EXPECT_GT(codes[code], 0) << "no call ended with " << code;
  }

  // Everything comes back: streams, sequences, queue, KV blocks (cached prefixes are free).
  const auto settle = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < settle &&
         (server.Metric("dsv3_active_streams") != 0 || server.Metric("dsv3_kv_blocks_used") != 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(server.Metric("dsv3_active_streams"), 0);
  EXPECT_EQ(server.Metric("dsv3_running_sequences"), 0);
  EXPECT_EQ(server.Metric("dsv3_queued_requests"), 0);
  EXPECT_EQ(server.Metric("dsv3_kv_blocks_used"), 0);
  EXPECT_EQ(server.Metric("dsv3_kv_blocks_total"), 2048);
  const int64_t end_kib = RssKiB(server.pid());
  std::printf("%d s, %lld calls; RSS warm %lld KiB, peak %lld KiB, end %lld KiB\n", seconds,
              static_cast<long long>(calls), static_cast<long long>(warm_kib),
              static_cast<long long>(peak_kib), static_cast<long long>(end_kib));
  // Flat: the rest of the run adds at most 10% (allocator noise) to what the first third used.
  if (kRssIsTheServers) {
    EXPECT_LE(peak_kib, warm_kib + warm_kib / 10) << "RSS grew under load";
    EXPECT_LE(end_kib, warm_kib + warm_kib / 10);
  } else {
    std::printf("RSS bounds not checked under AddressSanitizer (its allocator's memory); the "
                "plain build checks them\n");
  }
  EXPECT_EQ(server.Stop(), 0) << server.log();
}

}  // namespace
}  // namespace dsv3::testing::server_load_faults_test
