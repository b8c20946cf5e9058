#include "server/shutdown_signals.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace dsv3::server {
namespace {

int g_signal_pipe[2] = {-1, -1};

void OnSignal(int signal) {
  const unsigned char byte = static_cast<unsigned char>(signal);
  // Nothing useful to do if the pipe is full: a signal is already pending.
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);
}

const char* SignalName(int signal) {
  switch (signal) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "a signal";
  }
}

int ReadSignal() {
  unsigned char signal = 0;
  while (read(g_signal_pipe[0], &signal, 1) < 0 && errno == EINTR) {
  }
  return signal;
}

}  // namespace

absl::StatusOr<const ShutdownRequests*> InstallShutdownSignals() {
  // The handler only writes to a pipe (async-signal-safe); a thread reads it. A handler rather
  // than a blocked mask plus sigwait, because libraries start threads before main (OpenBLAS's
  // pool) that would not have the signals blocked and would take the default action.
  if (pipe(g_signal_pipe) != 0) {
    return absl::InternalError(absl::StrCat("cannot make the signal pipe: ", strerror(errno)));
  }
  // Never destroyed: the signal thread may use it while the process exits.
  auto* requests = new ShutdownRequests();
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  struct sigaction hangup {};
  sigaction(SIGHUP, nullptr, &hangup);
  if (hangup.sa_handler != SIG_IGN) sigaction(SIGHUP, &action, nullptr);
  std::thread([requests] {
    const int first = ReadSignal();
    spdlog::info("received {}: draining", SignalName(first));
    requests->drain.Notify();
    const int second = ReadSignal();
    spdlog::warn("received {} while draining: stopping now", SignalName(second));
    requests->stop_now.Notify();
    absl::SleepFor(kForcedExitAfter);
    spdlog::error("still running {} after {}: exiting", absl::FormatDuration(kForcedExitAfter),
                  SignalName(second));
    spdlog::default_logger()->flush();
    std::_Exit(1);
  }).detach();
  return requests;
}

}  // namespace dsv3::server
