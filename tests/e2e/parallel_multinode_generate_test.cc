// The per-node launch end to end on CPU: two "nodes" of dsv3-generate on loopback, each started
// with --tp 4 --nnodes 2 --node-rank i --dist-init-addr 127.0.0.1:PORT, so each spawns one more
// local rank (gloo across all four). Node 0 prints the TP=1 tokens, node 1 prints nothing and
// exits 0; killing node 1's worker makes both nodes exit non-zero within 10 s, leaving no rank.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "engine/parallel/socket_io.h"
#include "tests/test_util.h"

namespace dsv3::parallel_multinode_generate_test {
namespace {

using ::dsv3::testing::ChildPids;
using ::dsv3::testing::FixturePath;
using ::dsv3::testing::ProcessRunning;
using ::dsv3::testing::RunCommand;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::ToolPath;

const char* kPrompt = "918,349,723,81,739,677,388,490,471,40,174,444,470,644,418,66,46";

int FreePort() {
  auto listener = parallel_internal::Listen("127.0.0.1", 0);
  EXPECT_TRUE(listener.ok()) << listener.status();
  return *parallel_internal::BoundPort(listener->get());
}

// Starts one node of a --tp 4 --nnodes 2 group with stdout and stderr in `out`.
pid_t StartNode(int node_rank, int port, const std::vector<std::string>& extra,
                const std::string& out) {
  std::vector<std::string> args = {ToolPath("dsv3-generate"), "--model", FixturePath("tiny-bf16"),
                                   "--threads", "1", "--prompt-ids", kPrompt, "--tp", "4",
                                   "--nnodes", "2", "--node-rank", std::to_string(node_rank),
                                   "--dist-init-addr", "127.0.0.1:" + std::to_string(port)};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// The exit status of `pid`, or -1 (after SIGKILL) when it is still running at `deadline`.
int WaitExit(pid_t pid, absl::Time deadline) {
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(pid, &status, WNOHANG)) == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}


TEST(MultiNodeGenerateTest, TwoNodesOfTwoRanksGiveTheTokensOfOneRank) {
  TempDir dir;
  const auto one = RunCommand(ToolPath("dsv3-generate") + " --threads 1 --kv-memory-mb 64 --model " +
                              FixturePath("tiny-bf16") + " --prompt-ids " + kPrompt +
                              " --max-new-tokens 8");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_FALSE(one.out.empty());

  const int port = FreePort();
  // Node 1 first: its ranks wait for node 0's store, as pods that start in any order do.
  const std::vector<std::string> eight = {"--max-new-tokens", "8", "--kv-memory-mb", "64"};
  const pid_t node1 = StartNode(1, port, eight, dir.file("node1"));
  const pid_t node0 = StartNode(0, port, eight, dir.file("node0"));
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  const int code0 = WaitExit(node0, deadline);
  const int code1 = WaitExit(node1, deadline);
  const std::string log0 = Read(dir.file("node0"));
  const std::string log1 = Read(dir.file("node1"));
  ASSERT_EQ(code0, 0) << log0;
  EXPECT_EQ(code1, 0) << log1;
  // Node 0's output ends with the tokens (its log lines come first on the shared file).
  EXPECT_NE(log0.find(one.out), std::string::npos) << "want:\n" << one.out << "got:\n" << log0;
  EXPECT_NE(log0.find("starting ranks 1..1"), std::string::npos) << log0;
  EXPECT_NE(log1.find("rank 2 of 4: starting ranks 3..3"), std::string::npos) << log1;
  EXPECT_EQ(log1.find(one.out), std::string::npos) << "only global rank 0 prints tokens";
}

TEST(MultiNodeGenerateTest, KillingAWorkerOnNodeOneEndsBothNodesAndLeavesNoRank) {
  TempDir dir;
  const int port = FreePort();
  const std::vector<std::string> endless = {"--max-new-tokens", "30000", "--ignore-eos",
                                            "--kv-memory-mb", "64"};
  const pid_t node0 = StartNode(0, port, endless, dir.file("node0"));
  const pid_t node1 = StartNode(1, port, endless, dir.file("node1"));
  std::vector<pid_t> workers0, workers1;
  const absl::Time appear_deadline = absl::Now() + absl::Seconds(30);
  while ((workers0 = ChildPids(node0)).empty() || (workers1 = ChildPids(node1)).empty()) {
    if (absl::Now() > appear_deadline) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(workers0.size(), 1u) << Read(dir.file("node0"));
  ASSERT_EQ(workers1.size(), 1u) << Read(dir.file("node1"));
  // Let the group form and the generation get under way.
  const absl::Time running_deadline = absl::Now() + absl::Seconds(60);
  while (Read(dir.file("node0")).find("loading") == std::string::npos &&
         absl::Now() < running_deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  absl::SleepFor(absl::Seconds(1));
  ASSERT_EQ(kill(workers1[0], SIGKILL), 0);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  const int code1 = WaitExit(node1, deadline);
  const int code0 = WaitExit(node0, deadline);
  EXPECT_GT(code1, 0) << "node 1 (-1: still running 10 s after its worker died)\n"
                      << Read(dir.file("node1"));
  EXPECT_GT(code0, 0) << "node 0 (-1: still running 10 s after a rank died)\n"
                      << Read(dir.file("node0"));
  // Node 1 ended because it saw its own worker die, not only after rank 0 went away (with NCCL
  // a lost peer can leave a collective waiting: the supervisor is what ends it on the GPU).
  EXPECT_NE(Read(dir.file("node1")).find("tensor-parallel rank 3 killed by signal 9"),
            std::string::npos)
      << Read(dir.file("node1"));
  // The spawned ranks die with their node's process (killed by it, or by PR_SET_PDEATHSIG).
  const absl::Time gone_deadline = absl::Now() + absl::Seconds(2);
  while ((ProcessRunning(workers0[0]) || ProcessRunning(workers1[0])) &&
         absl::Now() < gone_deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_FALSE(ProcessRunning(workers0[0]));
  EXPECT_FALSE(ProcessRunning(workers1[0]));
}

}  // namespace
}  // namespace dsv3::parallel_multinode_generate_test
