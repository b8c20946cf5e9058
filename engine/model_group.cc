#include "engine/model_group.h"

#include <mutex>

#include "engine/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

absl::StatusOr<std::unique_ptr<ModelGroup>> ModelGroup::Start(Backend& backend,
                                                              const ModelGroupOptions& options) {
  DSV3_ASSIGN_OR_RETURN(ParallelConfig config,
                        ParallelConfigFromEnvironment(options.tp, options.rank_timeout));
  std::unique_ptr<ModelGroup> g(new ModelGroup());
  DSV3_ASSIGN_OR_RETURN(g->group_, RankGroup::Start(config, options.worker_args));
  Communicator& comm = g->group_->communicator();
  if (config.world_size > 1) {
    spdlog::info("rank {} of {}: loading {}", config.rank, config.world_size, options.model_dir);
  }
  DSV3_ASSIGN_OR_RETURN(g->model_, DeepseekV3Model::Load(options.model_dir, backend, comm));
  // Loading can take minutes on large checkpoints: wait for every rank with the startup timeout.
  DSV3_RETURN_IF_ERROR(comm.StartupBarrier(config.startup_timeout));
  if (g->is_worker()) return g;
  if (config.world_size == 1) {
    g->runner_ = MakeLocalModelRunner(*g->model_);
    return g;
  }
  // The runner (a failed collective or heartbeat) and the launcher (a worker exited) may both
  // notice one failure: the caller hears of it once.
  auto once = std::make_shared<std::once_flag>();
  auto fail = [once, on_failure = options.on_failure](const absl::Status& status) {
    if (on_failure) std::call_once(*once, on_failure, status);
  };
  TpLeaderOptions leader;
  leader.heartbeat_interval = options.rank_timeout / 4;
  leader.on_failure = fail;
  g->runner_ = MakeTpLeaderRunner(*g->model_, comm, leader);
  g->group_->SetOnWorkerExit([fail](int rank, const std::string& how) {
    fail(absl::UnavailableError("tensor-parallel rank " + std::to_string(rank) + " " + how));
  });
  return g;
}

ModelGroup::~ModelGroup() { Shutdown(); }

absl::Status ModelGroup::RunWorker() { return dsv3::RunWorker(*model_, group_->communicator()); }

void ModelGroup::Shutdown() {
  if (runner_) runner_->Shutdown();
  if (group_) group_->StopWorkers(absl::Seconds(5));
}

void ModelGroup::KillWorkers() {
  if (group_) group_->StopWorkers(absl::ZeroDuration());
}

}  // namespace dsv3
