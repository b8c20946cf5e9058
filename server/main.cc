// dsv3-server: the gRPC daemon. See `dsv3-server --help` and docs/serving.md.
//
// SIGTERM, SIGINT or SIGHUP drains: health goes NOT_SERVING, new calls get UNAVAILABLE, calls in
// flight may finish within --grace-period-s, the rest are aborted, and the process exits 0. A
// second one stops at once: the calls still open end with UNAVAILABLE and the process exits 1.
#include <thread>

#include <atomic>

#include "engine/group_failure_exit.h"
#include "engine/model_group.h"
#include "engine/util/log_format.h"
#include "server/model_loader.h"
#include "server/server.h"
#include "server/server_flags.h"
#include "server/serving_defaults.h"
#include "server/shutdown_signals.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  using namespace dsv3::server;
  ParsedFlags flags = ParseServerFlags(argc, argv);
  if (!flags.options) return flags.exit_code;
  const ServerOptions& options = *flags.options;

  dsv3::InstallStderrLogger("dsv3-server", *dsv3::ParseLogFormat(options.log_format),
                            spdlog::level::from_str(options.log_level));

  auto shutdown = InstallShutdownSignals();
  if (!shutdown.ok()) {
    spdlog::error("{}", std::string(shutdown.status().message()));
    return 1;
  }

  // The rank group first, on this (the main) thread and before gRPC starts its threads: rank 0
  // of a --tp launch forks its workers here, and they die with this thread.
  auto model_dir = ResolveModelDir(options);
  if (!model_dir.ok()) {
    spdlog::error("{}", std::string(model_dir.status().message()));
    return 1;
  }
  static std::atomic<Server*> serving{nullptr};
  dsv3::ModelGroupOptions group_options;
  group_options.tp = options.tp;
  group_options.node = options.node;
  group_options.dp_attention = options.dp_attention;
  group_options.rank_timeout = absl::Seconds(options.rank_timeout_s);
  group_options.custom_all_reduce = options.custom_all_reduce;
  group_options.worker_args = options.argv;
  group_options.on_failure = [](const absl::Status& status) {
    // A lost rank: stop admitting, let the failed steps answer UNAVAILABLE, then end the group.
    spdlog::error("{}: shutting down", std::string(status.message()));
    if (Server* s = serving.load(); s != nullptr) s->MarkBroken();
    std::thread([] {
      absl::SleepFor(absl::Seconds(1));
      dsv3::GroupFailureExit::Get().KillWorkersAndExit(1);
    }).detach();
  };
  auto group = dsv3::ModelGroup::Start(group_options);
  if (!group.ok()) {
    spdlog::error("{}", std::string(group.status().message()));
    return 1;
  }
  // The failure thread outlives main's frame; it reaches the group only while this guard lives.
  const dsv3::GroupFailureExit::Armed armed = dsv3::GroupFailureExit::Get().Arm(**group);
  if ((*group)->is_worker()) {
    // Workers hold a shard and run rank 0's plans: no gRPC, no metrics, no tokenizer.
    auto backend = MakeServerBackend(options, (*group)->local_rank());
    absl::Status st = backend.status();
    if (st.ok()) st = (*group)->Load(*model_dir, *std::move(backend));
    if (st.ok()) st = (*group)->RunWorker();
    if (!st.ok()) spdlog::error("{}", std::string(st.message()));
    return st.ok() ? 0 : 1;
  }

  auto server =
      Server::Start(options, ServedModelNames(options.served_model_names, *model_dir).front());
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  serving.store(server->get());
  if (absl::Status st = (*server)->LoadAndServe(*model_dir, **group); !st.ok()) {
    spdlog::error("cannot load the model: {}", std::string(st.message()));
    (*server)->Drain(absl::ZeroDuration());
    return 1;
  }
  (*shutdown)->drain.WaitForNotification();
  (*server)->Drain(absl::Seconds(options.grace_period_s), &(*shutdown)->stop_now);
  serving.store(nullptr);
  server->reset();
  (*group)->Shutdown();  // the workers exit once told, or are killed after a grace period
  return (*shutdown)->stop_now.HasBeenNotified() ? 1 : 0;
}
