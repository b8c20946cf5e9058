// dsv3-server: the gRPC daemon. See `dsv3-server --help` and docs/serving.md.
//
// SIGTERM or SIGINT drains: health goes NOT_SERVING, new calls get UNAVAILABLE, calls in flight
// may finish within --grace-period-s, the rest are aborted, and the process exits 0.
#include <signal.h>

#include <cstdio>
#include <thread>

#include "absl/synchronization/notification.h"
#include "server/server.h"
#include "server/server_flags.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  using namespace dsv3::server;
  ParsedFlags flags = ParseServerFlags(argc, argv);
  if (!flags.options) return flags.exit_code;
  const ServerOptions& options = *flags.options;

  spdlog::set_default_logger(spdlog::stderr_color_mt("dsv3-server"));
  spdlog::set_level(spdlog::level::from_str(options.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  // Signals are taken by one thread with sigwait, blocked everywhere else (threads inherit the
  // mask, so block before any thread starts).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::Notification stop;
  std::thread signal_thread([&] {
    int signal = 0;
    sigwait(&signals, &signal);
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
