// Launcher: workers get the rank environment, unexpected exits are reported, Stop kills and
// reaps, and killing rank 0 (SIGKILL, no cleanup) leaves no worker behind.
#include <gtest/gtest.h>

#include <signal.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "engine/parallel/launcher.h"
#include "tests/test_util.h"

namespace dsv3::parallel_launcher_test {
namespace {


TEST(LauncherTest, WorkersSeeTheirRankEnvironment) {
  testing::TempDir dir;
  absl::Mutex mu;
  int reported = 0;
  {
    auto launcher = Launcher::Start(
        {.program = "/bin/sh",
         .args = {"-c", "echo $RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT $LOCAL_RANK > " +
                            dir.file("rank") + "$RANK"},
         .world_size = 3,
         .node_ranks = 3,
         .master_port = 4321,
         .on_worker_exit = [&](int, const std::string&) {
           absl::MutexLock lock(&mu);
           ++reported;
         }});
    ASSERT_TRUE(launcher.ok()) << launcher.status();
    ASSERT_EQ((*launcher)->pids().size(), 2u);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while ((*launcher)->exited() < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
    (*launcher)->Stop(absl::Seconds(1));
  }
  for (int rank : {1, 2}) {
    std::ifstream in(dir.file("rank" + std::to_string(rank)));
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_EQ(text.str(), std::to_string(rank) + " 3 127.0.0.1 4321 " + std::to_string(rank) + "\n");
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(reported, 2);  // exits before Stop are reported, even clean ones
}

TEST(LauncherTest, ReportsAWorkerThatDies) {
  absl::Notification died;
  int died_rank = -1;
  std::string how;
  auto launcher = Launcher::Start({.program = "/bin/sh",
                                   .args = {"-c", "[ $RANK = 2 ] && exit 3; exec sleep 60"},
                                   .world_size = 3,
         .node_ranks = 3,
                                   .on_worker_exit = [&](int rank, const std::string& h) {
                                     died_rank = rank;
                                     how = h;
                                     died.Notify();
                                   }});
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  ASSERT_TRUE(died.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(died_rank, 2);
  EXPECT_EQ(how, "exited with status 3");
  // Stop kills the survivor (rank 1 sleeps) without waiting for the grace to pass in full,
  // and its death is not reported.
  const std::vector<pid_t> pids = (*launcher)->pids();
  const absl::Time start = absl::Now();
  (*launcher)->Stop(absl::Milliseconds(200));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  for (pid_t pid : pids) EXPECT_FALSE(testing::ProcessRunning(pid));
}

// Node 1 of a --nnodes 2 --tp 6 launch: its process is rank 3 and starts ranks 4 and 5 as
// LOCAL_RANK 1 and 2 (their GPUs), with the group's WORLD_SIZE and node 0's store address.
TEST(LauncherTest, WorkersOfAnotherNodeGetGlobalRanksAndLocalGpus) {
  testing::TempDir dir;
  {
    auto launcher = Launcher::Start(
        {.program = "/bin/sh",
         .args = {"-c", "echo $RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT $LOCAL_RANK > " +
                            dir.file("rank") + "$RANK"},
         .world_size = 6,
         .first_rank = 3,
         .node_ranks = 3,
         .master_addr = "node0.example",
         .master_port = 29500});
    ASSERT_TRUE(launcher.ok()) << launcher.status();
    ASSERT_EQ((*launcher)->pids().size(), 2u);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while ((*launcher)->exited() < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
    (*launcher)->Stop(absl::Seconds(1));
  }
  const struct {
    int rank;
    const char* line;
  } expected[] = {{4, "4 6 node0.example 29500 1\n"}, {5, "5 6 node0.example 29500 2\n"}};
  for (const auto& e : expected) {
    std::ifstream in(dir.file("rank" + std::to_string(e.rank)));
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_EQ(text.str(), e.line) << "rank " << e.rank;
  }
  EXPECT_FALSE(std::ifstream(dir.file("rank3")).good()) << "the launching rank is not spawned";
}

// On a node other than rank 0's, workers exit 0 when rank 0 ends the group, as the launching
// process itself does: not a failure. A non-zero exit still is.
TEST(LauncherTest, CleanExitsCanGoUnreported) {
  absl::Notification died;
  absl::Mutex mu;
  std::vector<int> reported;
  auto launcher = Launcher::Start(
      {.program = "/bin/sh",
       .args = {"-c", "[ $RANK = 2 ] && sleep 0.3 && exit 3; exit 0"},
       .world_size = 3,
       .node_ranks = 3,
       .on_worker_exit =
           [&](int rank, const std::string&) {
             absl::MutexLock lock(&mu);
             reported.push_back(rank);
             died.Notify();
           },
       .report_clean_exits = false});
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  ASSERT_TRUE(died.WaitForNotificationWithTimeout(absl::Seconds(10)));
  (*launcher)->Stop(absl::Seconds(1));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(reported, std::vector<int>{2});
}

TEST(LauncherTest, StopReturnsAsSoonAsWorkersExitOnTheirOwn) {
  auto launcher = Launcher::Start(
      {.program = "/bin/sh", .args = {"-c", "sleep 0.2"}, .world_size = 4, .node_ranks = 4});
  ASSERT_TRUE(launcher.ok());
  const absl::Time start = absl::Now();
  (*launcher)->Stop(absl::Seconds(20));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ((*launcher)->exited(), 3);
}

// Bug: of two concurrent Stop calls, the second returned at once while the first was still
// waiting and joining, so the destructor that followed it could destroy a joinable supervisor
// thread (std::terminate: dsv3-generate --tp died with SIGABRT when a worker was killed).
TEST(LauncherTest, SecondStopWaitsUntilTheFirstHasReapedAndJoined) {
  auto launcher = Launcher::Start(
      {.program = "/bin/sleep", .args = {"600"}, .world_size = 3, .node_ranks = 3});
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  const std::vector<pid_t> pids = (*launcher)->pids();
  // The first Stop waits out its grace (the workers sleep on), then kills them.
  std::thread first([&] { (*launcher)->Stop(absl::Seconds(1)); });
  absl::SleepFor(absl::Milliseconds(200));
  (*launcher)->Stop(absl::ZeroDuration());
  EXPECT_EQ((*launcher)->exited(), 2);
  for (pid_t pid : pids) EXPECT_FALSE(testing::ProcessRunning(pid));
  first.join();
}

TEST(LauncherTest, KillingRankZeroLeavesNoOrphan) {
  // Orphans are re-parented to us rather than to init, so that we can reap them and see how they
  // ended: killed by SIGKILL from PR_SET_PDEATHSIG.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);  // the workers must not hold the write end
  const pid_t rank0 = fork();
  ASSERT_GE(rank0, 0);
  if (rank0 == 0) {
    close(pipe_fds[0]);
    auto launcher = Launcher::Start(
        {.program = "/bin/sleep", .args = {"600"}, .world_size = 4, .node_ranks = 4});
    if (!launcher.ok()) _exit(1);
    for (pid_t pid : (*launcher)->pids()) {
      if (write(pipe_fds[1], &pid, sizeof(pid)) != sizeof(pid)) _exit(1);
    }
    close(pipe_fds[1]);
    pause();  // until the test kills us: no destructor, no cleanup
    _exit(0);
  }
  close(pipe_fds[1]);
  std::vector<pid_t> workers;
  pid_t pid;
  while (read(pipe_fds[0], &pid, sizeof(pid)) == sizeof(pid)) workers.push_back(pid);
  close(pipe_fds[0]);
  ASSERT_EQ(workers.size(), 3u);
  for (pid_t w : workers) EXPECT_TRUE(testing::ProcessRunning(w));

  ASSERT_EQ(kill(rank0, SIGKILL), 0);
  ASSERT_EQ(waitpid(rank0, nullptr, 0), rank0);
  for (pid_t w : workers) {
    int status = 0;
    // Blocks until the orphan dies; ctest's timeout would catch a survivor.
    ASSERT_EQ(waitpid(w, &status, 0), w);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

}  // namespace
}  // namespace dsv3::parallel_launcher_test
