// dsv3-server: the gRPC daemon. See `dsv3-server --help` and docs/serving.md.
//
// SIGTERM or SIGINT drains: health goes NOT_SERVING, new calls get UNAVAILABLE, calls in flight
// may finish within --grace-period-s, the rest are aborted, and the process exits 0.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <thread>

#include "absl/synchronization/notification.h"
#include "server/server.h"
#include "server/server_flags.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

int g_signal_pipe[2] = {-1, -1};

void OnSignal(int signal) {
  const unsigned char byte = static_cast<unsigned char>(signal);
  // Nothing useful to do if the pipe is full: a signal is already pending.
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace dsv3::server;
  ParsedFlags flags = ParseServerFlags(argc, argv);
  if (!flags.options) return flags.exit_code;
  const ServerOptions& options = *flags.options;

  spdlog::set_default_logger(spdlog::stderr_color_mt("dsv3-server"));
  spdlog::set_level(spdlog::level::from_str(options.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  // The handler only writes to a pipe (async-signal-safe); a thread reads it. A handler rather
  // than a blocked mask plus sigwait, because libraries start threads before main (OpenBLAS's
  // pool) that would not have the signals blocked and would take the default action.
  if (pipe(g_signal_pipe) != 0) {
    std::perror("pipe");
    return 1;
  }
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  absl::Notification stop;
  std::thread signal_thread([&] {
    unsigned char signal = 0;
    while (read(g_signal_pipe[0], &signal, 1) < 0 && errno == EINTR) {
    }
    spdlog::info("received {}: draining", signal == SIGTERM ? "SIGTERM" : "SIGINT");
    stop.Notify();
  });
  signal_thread.detach();

  auto server = Server::Start(options);
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  if (absl::Status st = (*server)->LoadAndServe(); !st.ok()) {
    spdlog::error("cannot load the model: {}", std::string(st.message()));
    (*server)->Drain(absl::ZeroDuration());
    return 1;
  }
  stop.WaitForNotification();
  (*server)->Drain(absl::Seconds(options.grace_period_s));
  server->reset();
  return 0;
}
