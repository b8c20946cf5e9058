// RankGroup: everything a process needs to take its place in a tensor-parallel group, in the
// right order: the rendezvous store (served by rank 0), the workers (spawned by local rank 0 of
// each node in a --tp or --nnodes launch), and the host communicator (gloo; a single-rank one
// when --tp is 1).
//
// A spawned worker that exits is reported once through the handler set with SetOnWorkerExit
// (an exit that came before the handler was set is delivered when it is set); on a node other
// than rank 0's, only exits with a non-zero status or a signal. During rendezvous such an exit
// fails Start at once instead of after the startup timeout.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/launcher.h"
#include "engine/parallel/parallel_config.h"
#include "engine/parallel/tcp_store.h"

namespace dsv3 {

class RankGroup {
 public:
  using ExitHandler = std::function<void(int rank, const std::string& how)>;

  // `worker_args` are argv[1..] of this process, which spawned workers repeat.
  static absl::StatusOr<std::unique_ptr<RankGroup>> Start(const ParallelConfig& config,
                                                          std::vector<std::string> worker_args);
  ~RankGroup();  // StopWorkers(absl::ZeroDuration())

  const ParallelConfig& config() const { return config_; }
  int rank() const { return config_.rank; }
  int world_size() const { return config_.world_size; }
  // gloo over TCP (CPU collectives, the step plan broadcast); SingleRankCommunicator at TP=1.
  Communicator& communicator() { return *communicator_; }
  // Null at TP=1. The NCCL communicator exchanges its unique id through it.
  TcpStore* store() { return store_.get(); }

  void SetOnWorkerExit(ExitHandler handler);
  // The reported worker exit (rank, how), waiting up to `wait` for one; nullopt if none came.
  std::optional<std::pair<int, std::string>> AwaitWorkerExit(absl::Duration wait);
  // A process that spawned workers: waits up to `grace` for them to exit (after rank 0's runner
  // told them to), then kills and reaps the rest. A no-op elsewhere. Idempotent.
  void StopWorkers(absl::Duration grace);

 private:
  explicit RankGroup(ParallelConfig config) : config_(std::move(config)) {}
  void OnWorkerExit(int rank, const std::string& how);

  const ParallelConfig config_;
  std::unique_ptr<TcpStore> store_;
  std::unique_ptr<Launcher> launcher_;
  std::unique_ptr<Communicator> communicator_;

  absl::Mutex mu_;
  ExitHandler handler_ ABSL_GUARDED_BY(mu_);
  std::optional<std::pair<int, std::string>> first_exit_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dsv3
