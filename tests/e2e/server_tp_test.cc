// dsv3-server with tensor parallelism on the CPU (--tp 2 spawns one worker process): streamed ids
// equal TP=1's, GetModelInfo reports the size, and a worker killed mid-stream ends the call with
// UNAVAILABLE and the server with a non-zero exit within 10 s, leaving no process behind.
#include <gtest/gtest.h>

#include <dirent.h>
#include <signal.h>

#include <fstream>
#include <chrono>
#include <string>
#include <vector>

#include "tests/e2e/server_process.h"

namespace dsv3::server_tp_test {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::GreedyIds;
using ::dsv3::testing::ReadGenerate;
using ::dsv3::testing::ServerProcess;
using ::dsv3::testing::StreamResult;
using ::dsv3::v1::GenerateResponse;

const std::vector<int32_t> kPrompt = {0, 17, 99, 512, 3, 250, 7, 1000, 42};

// Processes whose parent is `parent` (from /proc).
std::vector<pid_t> Children(pid_t parent) {
  std::vector<pid_t> out;
  DIR* proc = opendir("/proc");
  while (dirent* e = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(line.substr(paren + 2));
    char state;
    pid_t ppid;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') out.push_back(pid);
  }
  closedir(proc);
  return out;
}

bool Alive(pid_t pid) { return kill(pid, 0) == 0; }

StreamResult Generate(ServerProcess& server, int max_tokens) {
  auto stub = server.Stub();
  return ReadGenerate(*stub, GreedyIds(kPrompt, max_tokens));
}

TEST(ServerTensorParallelTest, Tp2StreamsTheSameIdsAsTp1) {
  const std::string model = "--model=" + FixturePath("tiny-fp8");
  ServerProcess tp1({model});
  ServerProcess tp2({model, "--tp=2"});
  ASSERT_TRUE(tp1.WaitServing()) << tp1.log();
  ASSERT_TRUE(tp2.WaitServing()) << tp2.log();
  const StreamResult one = Generate(tp1, 40);
  const StreamResult two = Generate(tp2, 40);
  ASSERT_TRUE(one.status.ok()) << one.status.error_message();
  ASSERT_TRUE(two.status.ok()) << two.status.error_message() << tp2.log();
  EXPECT_EQ(two.ids.size(), 40u);
  EXPECT_EQ(two.ids, one.ids);

  auto stub = tp2.Stub();
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.tensor_parallel_size(), 2);
}

TEST(ServerTensorParallelTest, KilledWorkerGivesUnavailableAndExitsNonZero) {
  ServerProcess server({"--model=" + FixturePath("tiny-bf16"), "--tp=2"});
  ASSERT_TRUE(server.WaitServing()) << server.log();
  const std::vector<pid_t> workers = Children(server.pid());
  ASSERT_EQ(workers.size(), 1u) << server.log();

  // The worker dies once the stream is under way: after its first response (a fixed sleep
  // raced the first token on a loaded machine).
  auto stub = server.Stub();
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyIds(kPrompt, 30000));
  GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response)) << server.log();
  size_t ids = response.token_ids_size();
  ASSERT_EQ(kill(workers[0], SIGKILL), 0);
  const auto killed = std::chrono::steady_clock::now();
  while (reader->Read(&response)) ids += response.token_ids_size();
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_GT(ids, 0u);
  EXPECT_LT(ids, 30000u);

  const int code = server.WaitExit(std::chrono::seconds(10) -
                                   std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::steady_clock::now() - killed));
  EXPECT_GT(code, 0) << server.log();
  EXPECT_FALSE(Alive(workers[0]));
}

}  // namespace
}  // namespace dsv3::server_tp_test
