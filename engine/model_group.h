// ModelGroup: loading a model on one rank or as a tensor-parallel group, the same way for
// dsv3-server and dsv3-generate. Start() sets up the rank group (local rank 0 of a --tp or
// --nnodes launch spawns its host's workers); Load() loads this rank's shard and meets the other
// ranks. On a worker rank (every rank but global rank 0, a node's local rank 0 included) the
// caller then runs RunWorker() and exits with its result; on rank 0 it builds an engine on
// runner().
//
// Call Start on the main thread, which must live until the process exits: spawned workers are
// forked from it and die with it (PR_SET_PDEATHSIG follows the forking thread).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/backend/backend.h"
#include "engine/model/model.h"
#include "engine/model_runner.h"
#include "engine/parallel/rank_group.h"

namespace dsv3 {

struct ModelGroupOptions {
  int tp = 1;  // --tp: ranks in all; RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT take precedence
  NodeLaunchFlags node;  // --nnodes, --node-rank, --dist-init-addr (engine/parallel/parallel_config.h)
  // --dp-attention: the ranks split only the routed experts and each runs attention for its own
  // requests (DeepseekV3Model::Load's dp_attention); needs a world of 2 or more.
  bool dp_attention = false;
  absl::Duration rank_timeout = absl::Seconds(60);  // longest wait for any rank in a step
  bool custom_all_reduce = false;  // --custom-all-reduce (ParallelConfig::custom_all_reduce)
  std::vector<std::string> worker_args;             // argv[1..], repeated by spawned workers
  // Called once, from a background thread, when the group breaks. On rank 0: a worker exited or
  // stopped answering (in-flight steps fail with UNAVAILABLE on their own). On the local rank 0
  // of another node: one of the workers it spawned failed; the caller must end the process
  // non-zero, so that its node's ranks go and rank 0 notices.
  std::function<void(const absl::Status&)> on_failure;
};

class ModelGroup {
 public:
  static absl::StatusOr<std::unique_ptr<ModelGroup>> Start(const ModelGroupOptions& options);
  ~ModelGroup();  // Shutdown()

  // Loads `model_dir` (this rank's shard) into `backend`, waits for every rank, and on rank 0
  // makes the runner. Once. The group keeps the backend and frees the model and the KV cache
  // before it (their tensors live in its memory). A GPU backend in a group of several ranks gets
  // NCCL collectives (MakeDeviceCommunicator); make it on device local_rank(). `options`: how
  // the weights are read and where this rank's progress goes.
  absl::Status Load(const std::string& model_dir, std::unique_ptr<Backend> backend,
                    const WeightLoadOptions& options = {});

  bool is_worker() const { return group_->rank() != 0; }
  // This rank's GPU on its host (LOCAL_RANK; the rank itself in a one-host --tp launch): the
  // device to make the backend on.
  int local_rank() const { return group_->config().local_rank; }
  int world_size() const { return group_->world_size(); }
  // After Load.
  DeepseekV3Model& model() { return *model_; }
  Backend& backend() { return *backend_; }
  // Rank 0 only.
  ModelRunner& runner() { return *runner_; }
  // Worker ranks: runs the plans rank 0 sends until it says stop (OK) or disappears.
  absl::Status RunWorker();
  // Rank 0: tells the workers to exit and reaps them (killing any that linger). Idempotent.
  void Shutdown();
  // Rank 0 after a failure: kills the workers at once.
  void KillWorkers();

 private:
  explicit ModelGroup(ModelGroupOptions options) : options_(std::move(options)) {}
  const ModelGroupOptions options_;
  std::unique_ptr<RankGroup> group_;
  std::unique_ptr<Backend> backend_;  // before everything that holds its tensors
  // NCCL for GPU backends (null: the model uses group_'s host communicator).
  std::unique_ptr<Communicator> device_comm_;
  std::unique_ptr<DeepseekV3Model> model_;
  std::unique_ptr<ModelRunner> runner_;
};

}  // namespace dsv3
