#include "engine/model_group.h"

#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/device_communicator.h"
#include "engine/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

absl::StatusOr<std::unique_ptr<ModelGroup>> ModelGroup::Start(const ModelGroupOptions& options) {
  DSV3_ASSIGN_OR_RETURN(
      ParallelConfig config,
      ParallelConfigFromEnvironment(options.tp, options.node, options.rank_timeout));
  config.custom_all_reduce = options.custom_all_reduce;
  if (config.spawn_workers()) {
    spdlog::info("rank {} of {}: starting ranks {}..{} on this host", config.rank,
                 config.world_size, config.rank + 1, config.rank + config.node_ranks - 1);
  }
  if (options.dp_attention && config.world_size < 2) {
    return absl::InvalidArgumentError(
        "--dp-attention needs several ranks (--tp 2 or more, or WORLD_SIZE >= 2)");
  }
  std::unique_ptr<ModelGroup> g(new ModelGroup(options));
  DSV3_ASSIGN_OR_RETURN(g->group_, RankGroup::Start(config, options.worker_args));
  if (config.spawn_workers() && !config.leader()) {
    // Local rank 0 of another node: rank 0 learns of a lost worker here only through failed
    // collectives, so this process ends its node (the caller exits non-zero, its workers die
    // with it) and rank 0 sees the whole node go. Exits with status 0 are not reported.
    g->group_->SetOnWorkerExit([on_failure = options.on_failure](int rank, const std::string& how) {
      const absl::Status status = absl::UnavailableError(
          "tensor-parallel rank " + std::to_string(rank) + " " + how);
      if (on_failure) on_failure(status);
    });
  }
  return g;
}

absl::Status ModelGroup::Load(const std::string& model_dir, std::unique_ptr<Backend> backend,
                              const WeightLoadOptions& options) {
  backend_ = std::move(backend);
  const ParallelConfig& config = group_->config();
  DSV3_ASSIGN_OR_RETURN(device_comm_, MakeDeviceCommunicator(*backend_, *group_));
  Communicator& comm = device_comm_ ? *device_comm_ : group_->communicator();
  if (config.world_size > 1) {
    spdlog::info("rank {} of {}: loading {} ({} collectives{})", config.rank, config.world_size,
                 model_dir, device_comm_ ? "NCCL" : "gloo",
                 options_.dp_attention ? "; data-parallel attention, expert-parallel MoE" : "");
  }
  DSV3_ASSIGN_OR_RETURN(model_, DeepseekV3Model::Load(model_dir, *backend_, comm, options,
                                                      options_.dp_attention));
  // Loading can take minutes on large checkpoints: wait for every rank with the startup timeout.
  DSV3_RETURN_IF_ERROR(comm.StartupBarrier(config.startup_timeout));
  if (is_worker()) return absl::OkStatus();
  if (config.world_size == 1) {
    runner_ = MakeLocalModelRunner(*model_);
    return absl::OkStatus();
  }
  // The runner (a failed collective or heartbeat) and the launcher (a worker exited) may both
  // notice one failure: the caller hears of it once, first. A GPU step may be waiting inside
  // an NCCL collective for the lost rank: aborting the communicator ends that wait, so the step
  // fails instead of hanging until the process exits. The abort runs on a thread of its own:
  // with NCCL kernels spinning on a dead peer it can block (measured: a killed worker left rank
  // 0 hung in it, before the caller heard anything), and the caller's exit must not wait on it.
  auto once = std::make_shared<std::once_flag>();
  auto fail = [once, on_failure = options_.on_failure,
               device_comm = device_comm_.get()](const absl::Status& status) {
    std::call_once(*once, [&] {
      if (on_failure) on_failure(status);
      if (device_comm != nullptr) {
        std::thread([device_comm] { device_comm->Abort(); }).detach();
      }
    });
  };
  TpLeaderOptions leader;
  leader.heartbeat_interval = options_.rank_timeout / 4;
  leader.on_failure = fail;
  runner_ = MakeTpLeaderRunner(*model_, comm, leader);
  group_->SetOnWorkerExit([fail](int rank, const std::string& how) {
    fail(absl::UnavailableError("tensor-parallel rank " + std::to_string(rank) + " " + how));
  });
  return absl::OkStatus();
}

ModelGroup::~ModelGroup() { Shutdown(); }

absl::Status ModelGroup::RunWorker() {
  const absl::Status status =
      dsv3::RunWorker(*model_, device_comm_ ? *device_comm_ : group_->communicator());
  if (status.ok() || !group_->config().spawn_workers()) return status;
  // A worker of this node that dies closes its sockets before the kernel tells its parent, so
  // this rank's collective usually fails first (measured in CI: the peer's "connection reset"
  // came before the launcher saw the exit). Give the launcher a moment so that the error names
  // the cause rather than the symptom.
  if (auto exit = group_->AwaitWorkerExit(absl::Seconds(1))) {
    return absl::UnavailableError(absl::StrCat("tensor-parallel rank ", exit->first, " ",
                                               exit->second, " (", status.message(), ")"));
  }
  return status;
}

void ModelGroup::Shutdown() {
  if (runner_) runner_->Shutdown();
  if (group_) group_->StopWorkers(absl::Seconds(5));
}

void ModelGroup::KillWorkers() {
  if (group_) group_->StopWorkers(absl::ZeroDuration());
}

}  // namespace dsv3
