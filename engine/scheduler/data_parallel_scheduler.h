// DataParallelScheduler: the scheduler of data-parallel attention (--dp-attention), one Scheduler
// and one BlockPool per attention rank behind the Scheduler's call protocol (scheduler.h):
//
//   StepPlan plan = scheduler.Schedule();   // every rank's plan, rank after rank
//   ... run plan.ToForwardBatch() (the runner gives each rank its sequences) and sample ...
//   scheduler.CommitStep(plan, emitted);    // each rank's part to its own scheduler
//
// A sequence is assigned to one rank when it is added, and stays there for its life (its KV
// lives in that rank's cache). Each rank caches prefixes in its own pool, so a prompt goes where
// the longest prefix of it is cached, unless the ranks' loads are too far apart
// (DataParallelPlacement, the cache-aware rule of SGLang's router), else to the least loaded
// rank: the fewest sequences (waiting and running), then the fewest blocks in use, then the
// lowest. Each rank's scheduler keeps its own limits (max_batched_tokens and max_running_seqs
// apply per rank) and preempts only its own sequences. Plan entries carry their rank
// (ScheduledSequence::attention_rank). With one rank this is exactly one Scheduler over one
// pool.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/kv/block_pool.h"
#include "engine/scheduler/scheduler.h"

namespace dsv3 {

// Where a new sequence goes when some rank's prefix cache holds the start of its prompt: the rank
// holding the longest cached prefix (ties: the least loaded of them) if that prefix is more than
// `cache_threshold` of the prompt, unless the loads are imbalanced: that rank has more than
// `balance_abs_threshold` sequences more than the least loaded rank and more than
// `balance_rel_threshold` times as many. The defaults are SGLang's router's.
struct DataParallelPlacement {
  double cache_threshold = 0.3;
  int32_t balance_abs_threshold = 64;
  double balance_rel_threshold = 1.5;
};

class DataParallelScheduler {
 public:
  // `config` must be valid (asserted); num_ranks >= 1; every rank gets a pool of
  // `blocks_per_rank` blocks of `block_size` tokens (the geometry of every rank's KV cache).
  DataParallelScheduler(const SchedulerConfig& config, int num_ranks, int32_t blocks_per_rank,
                        int32_t block_size, const DataParallelPlacement& placement = {});

  // Scheduler::AddSequence on the rank the file comment describes; its errors.
  absl::Status AddSequence(SequenceId id, std::vector<int32_t> prompt_ids, int32_t max_new_tokens);
  StepPlan Schedule();
  // Scheduler::CommitStep for each rank's entries of `plan`, the last Schedule result (emitted
  // tokens in plan order, one list per entry with sample = true).
  void CommitStep(const StepPlan& plan, absl::Span<const int32_t> sampled_tokens);
  void CommitStep(const StepPlan& plan, absl::Span<const std::vector<int32_t>> emitted);
  // Scheduler::Finish / Abort on the sequence's rank. NotFound for an unknown id.
  absl::Status Finish(SequenceId id);
  absl::Status Abort(SequenceId id);

  const Sequence* Find(SequenceId id) const;
  bool HasWork() const;
  // Summed over the ranks.
  SchedulerStats stats() const;
  BlockPoolStats pool_stats() const;
  // Every rank's Scheduler::CheckInvariants, and each sequence known to its rank's scheduler only.
  absl::Status CheckInvariants() const;

  int num_ranks() const { return static_cast<int>(ranks_.size()); }
  // Rank r's block pool.
  const BlockPool& rank_pool(int r) const { return *ranks_[r].pool; }
  // The rank of a live sequence, or -1.
  int RankOf(SequenceId id) const;

 private:
  struct Rank {
    std::unique_ptr<BlockPool> pool;
    std::unique_ptr<Scheduler> scheduler;
  };
  // Sequences waiting and running on rank r.
  int32_t NumSequences(int r) const;
  int LeastLoadedRank() const;
  int RankFor(absl::Span<const int32_t> prompt_ids) const;
  // The entries of `plan` that belong to `rank`, as that rank's own plan.
  static StepPlan PartOf(const StepPlan& plan, int rank);

  const bool prefix_caching_;
  const DataParallelPlacement placement_;
  std::vector<Rank> ranks_;
  absl::flat_hash_map<SequenceId, int> rank_of_;
};

}  // namespace dsv3
