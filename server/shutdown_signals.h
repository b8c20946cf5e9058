// How dsv3-server reacts to SIGTERM, SIGINT and SIGHUP (docs/serving.md, "Stop"): the first one
// asks for a drain; a second one, of any of the three, asks to stop at once. A process that has
// not ended kForcedExitAfter after the second signal (a model still loading cannot be
// interrupted) exits 1 right there.
//
// SIGHUP drains like SIGTERM: the daemon has no configuration to reload, and the hangup of the
// terminal it was started from should end it gracefully, not kill it mid-stream (the default
// action). A daemon started ignoring SIGHUP (nohup) keeps ignoring it.
#pragma once

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace dsv3::server {

inline constexpr absl::Duration kForcedExitAfter = absl::Seconds(10);

struct ShutdownRequests {
  absl::Notification drain;     // the first signal
  absl::Notification stop_now;  // a second one
};

// Installs the handlers and starts the thread that reads the signals. Once per process; the
// requests live until the process ends.
absl::StatusOr<const ShutdownRequests*> InstallShutdownSignals();

}  // namespace dsv3::server
