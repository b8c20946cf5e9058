// The e2e helper itself. Bug: tests that timed out left dsv3-server processes running under init,
// and servers were ended with SIGKILL so that no leak checker saw them exit. Now a server is
// stopped with SIGTERM (SIGKILL only after a timeout) and dies with the test process.
#include <sys/prctl.h>
#include <sys/wait.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_process_test {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> TinyArgs() {
  return {"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=32",
          "--kv-block-size=16"};
}

std::string ReadCommandLine(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ServerProcessTest, StopEndsTheServerWithSigtermAndItExitsCleanly) {
  ServerProcess server(TinyArgs());
  ASSERT_TRUE(server.WaitServing()) << server.log();
  EXPECT_EQ(server.Stop(), 0) << server.log();
  EXPECT_THAT(server.log(), HasSubstr("received SIGTERM: draining"));
  EXPECT_THAT(server.log(), HasSubstr("stopped"));
}

TEST(ServerProcessTest, ServerDiesWithTheTestProcess) {
  // The orphaned server is re-parented to us rather than to init, so that we can reap it and
  // see how it ended.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);  // the server must not hold the write end
  const pid_t test_process = fork();
  ASSERT_GE(test_process, 0);
  if (test_process == 0) {
    // A test process that starts a server and then dies without any cleanup (as on a timeout).
    // No gRPC here: this is a fork of a process that may have gRPC threads.
    close(pipe_fds[0]);
    ServerProcess server(TinyArgs());
    const pid_t pid = server.pid();
    if (write(pipe_fds[1], &pid, sizeof(pid)) != sizeof(pid)) _exit(1);
    pause();
    _exit(0);
  }
  close(pipe_fds[1]);
  pid_t server = -1;
  ASSERT_EQ(read(pipe_fds[0], &server, sizeof(server)), static_cast<ssize_t>(sizeof(server)));
  close(pipe_fds[0]);
  ASSERT_GT(server, 0);
  // Once the server runs dsv3-server, it has asked for its death signal.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ReadCommandLine(server).find("dsv3-server") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(ReadCommandLine(server).find("dsv3-server"), std::string::npos);
  ASSERT_EQ(kill(test_process, SIGKILL), 0);
  ASSERT_EQ(waitpid(test_process, nullptr, 0), test_process);
  int status = 0;
  // Blocks until the orphan dies; ctest's timeout would catch a survivor.
  ASSERT_EQ(waitpid(server, &status, 0), server);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

}  // namespace
}  // namespace dsv3::testing::server_process_test
