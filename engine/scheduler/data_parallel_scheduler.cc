#include "engine/scheduler/data_parallel_scheduler.h"

#include <cassert>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace dsv3 {

DataParallelScheduler::DataParallelScheduler(const SchedulerConfig& config, int num_ranks,
                                             int32_t blocks_per_rank, int32_t block_size,
                                             const DataParallelPlacement& placement)
    : prefix_caching_(config.enable_prefix_caching), placement_(placement) {
  assert(num_ranks >= 1);
  // One hash key for every rank's pool: a prompt's block hashes, computed once, look it up in
  // each (RankFor).
  const BlockHasher hasher = BlockHasher::WithRandomKey();
  for (int r = 0; r < num_ranks; ++r) {
    Rank& rank = ranks_.emplace_back();
    rank.pool = std::make_unique<BlockPool>(blocks_per_rank, block_size, hasher);
    rank.scheduler = std::make_unique<Scheduler>(config, *rank.pool);
  }
}

int32_t DataParallelScheduler::NumSequences(int r) const {
  const SchedulerStats s = ranks_[r].scheduler->stats();
  return s.num_waiting + s.num_running;
}

int DataParallelScheduler::LeastLoadedRank() const {
  int best = 0;
  std::tuple<int32_t, int32_t> best_load;
  for (int r = 0; r < num_ranks(); ++r) {
    const std::tuple<int32_t, int32_t> load{NumSequences(r), ranks_[r].pool->stats().num_used};
    if (r == 0 || load < best_load) {
      best = r;
      best_load = load;
    }
  }
  return best;
}

int DataParallelScheduler::RankFor(absl::Span<const int32_t> prompt_ids) const {
  const int least = LeastLoadedRank();
  if (!prefix_caching_ || num_ranks() == 1 || prompt_ids.empty()) return least;
  // The blocks a hit can cover end before the last token (Scheduler::AdmitFront).
  const BlockPool& pool0 = *ranks_[0].pool;
  const int32_t block_size = pool0.block_size();
  const int32_t eligible = (static_cast<int32_t>(prompt_ids.size()) - 1) / block_size;
  std::vector<BlockHash> hashes;
  BlockHash parent;  // the first block's parent
  for (int32_t i = 0; i < eligible; ++i) {
    parent = pool0.hasher().Hash(parent, prompt_ids.subspan(i * block_size, block_size));
    hashes.push_back(parent);
  }
  int best = least;
  int32_t best_blocks = 0;
  for (int r = 0; r < num_ranks(); ++r) {
    const int32_t blocks =
        static_cast<int32_t>(ranks_[r].pool->MatchPrefix(hashes, prompt_ids).blocks.size());
    if (blocks > best_blocks ||
        (blocks == best_blocks && blocks > 0 && NumSequences(r) < NumSequences(best))) {
      best = r;
      best_blocks = blocks;
    }
  }
  const double cached = static_cast<double>(best_blocks) * block_size / prompt_ids.size();
  const int32_t load = NumSequences(best), least_load = NumSequences(least);
  const bool imbalanced = load - least_load > placement_.balance_abs_threshold &&
                          load > placement_.balance_rel_threshold * least_load;
  return cached > placement_.cache_threshold && !imbalanced ? best : least;
}

absl::Status DataParallelScheduler::AddSequence(SequenceId id, std::vector<int32_t> prompt_ids,
                                                int32_t max_new_tokens) {
  if (rank_of_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id, " already exists"));
  }
  const int r = RankFor(prompt_ids);
  absl::Status s = ranks_[r].scheduler->AddSequence(id, std::move(prompt_ids), max_new_tokens);
  if (s.ok()) rank_of_[id] = r;
  return s;
}

StepPlan DataParallelScheduler::Schedule() {
  if (num_ranks() == 1) return ranks_[0].scheduler->Schedule();
  StepPlan plan;
  for (int r = 0; r < num_ranks(); ++r) {
    StepPlan part = ranks_[r].scheduler->Schedule();
    for (ScheduledSequence& entry : part.sequences) {
      entry.attention_rank = r;
      plan.sequences.push_back(std::move(entry));
    }
    plan.preempted.insert(plan.preempted.end(), part.preempted.begin(), part.preempted.end());
  }
  return plan;
}

StepPlan DataParallelScheduler::PartOf(const StepPlan& plan, int rank) {
  StepPlan part;
  for (const ScheduledSequence& entry : plan.sequences) {
    if (entry.attention_rank == rank) part.sequences.push_back(entry);
  }
  return part;
}

void DataParallelScheduler::CommitStep(const StepPlan& plan,
                                       absl::Span<const int32_t> sampled_tokens) {
  std::vector<std::vector<int32_t>> emitted;
  for (int32_t token : sampled_tokens) emitted.push_back({token});
  CommitStep(plan, emitted);
}

void DataParallelScheduler::CommitStep(const StepPlan& plan,
                                       absl::Span<const std::vector<int32_t>> emitted) {
  if (num_ranks() == 1) return ranks_[0].scheduler->CommitStep(plan, emitted);
  // Each rank's sampled entries, in plan order, take their tokens in that order.
  std::vector<std::vector<std::vector<int32_t>>> per_rank(num_ranks());
  size_t next = 0;
  for (const ScheduledSequence& entry : plan.sequences) {
    if (entry.sample) per_rank[entry.attention_rank].push_back(emitted[next++]);
  }
  assert(next == emitted.size());
  for (int r = 0; r < num_ranks(); ++r) {
    ranks_[r].scheduler->CommitStep(PartOf(plan, r), per_rank[r]);
  }
}

absl::Status DataParallelScheduler::Finish(SequenceId id) {
  const int r = RankOf(id);
  if (r < 0) return absl::NotFoundError(absl::StrCat("sequence ", id, " not found"));
  absl::Status s = ranks_[r].scheduler->Finish(id);
  if (s.ok()) rank_of_.erase(id);
  return s;
}

absl::Status DataParallelScheduler::Abort(SequenceId id) {
  const int r = RankOf(id);
  if (r < 0) return absl::NotFoundError(absl::StrCat("sequence ", id, " not found"));
  absl::Status s = ranks_[r].scheduler->Abort(id);
  if (s.ok()) rank_of_.erase(id);
  return s;
}

const Sequence* DataParallelScheduler::Find(SequenceId id) const {
  const int r = RankOf(id);
  return r < 0 ? nullptr : ranks_[r].scheduler->Find(id);
}

int DataParallelScheduler::RankOf(SequenceId id) const {
  auto it = rank_of_.find(id);
  return it == rank_of_.end() ? -1 : it->second;
}

bool DataParallelScheduler::HasWork() const {
  for (const Rank& r : ranks_) {
    if (r.scheduler->HasWork()) return true;
  }
  return false;
}

SchedulerStats DataParallelScheduler::stats() const {
  SchedulerStats sum;
  for (const Rank& r : ranks_) {
    const SchedulerStats s = r.scheduler->stats();
    sum.num_waiting += s.num_waiting;
    sum.num_running += s.num_running;
    sum.num_preemptions += s.num_preemptions;
    sum.num_finished += s.num_finished;
    sum.num_aborted += s.num_aborted;
  }
  return sum;
}

BlockPoolStats DataParallelScheduler::pool_stats() const {
  BlockPoolStats sum;
  for (const Rank& r : ranks_) {
    const BlockPoolStats s = r.pool->stats();
    sum.num_blocks += s.num_blocks;
    sum.num_free += s.num_free;
    sum.num_evictable += s.num_evictable;
    sum.num_used += s.num_used;
    sum.num_cached += s.num_cached;
    sum.prefix_queried_blocks += s.prefix_queried_blocks;
    sum.prefix_hit_blocks += s.prefix_hit_blocks;
  }
  return sum;
}

absl::Status DataParallelScheduler::CheckInvariants() const {
  for (int r = 0; r < num_ranks(); ++r) {
    if (absl::Status s = ranks_[r].scheduler->CheckInvariants(); !s.ok()) {
      return absl::InternalError(absl::StrCat("attention rank ", r, ": ", s.message()));
    }
  }
  for (const auto& [id, rank] : rank_of_) {
    for (int r = 0; r < num_ranks(); ++r) {
      const bool known = ranks_[r].scheduler->Find(id) != nullptr;
      if (known != (r == rank)) {
        return absl::InternalError(absl::StrCat("sequence ", id, " is assigned to rank ", rank,
                                                ", but rank ", r, "'s scheduler ",
                                                known ? "has" : "lacks", " it"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace dsv3
