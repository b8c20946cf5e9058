#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dsv3 {

absl::Status SchedulerConfig::Validate() const {
  if (max_batched_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batched_tokens must be >= 1, got ", max_batched_tokens));
  }
  if (max_running_seqs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_running_seqs must be >= 1, got ", max_running_seqs));
  }
  if (max_batched_tokens < max_running_seqs) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batched_tokens must be >= max_running_seqs (", max_running_seqs,
                     "), got ", max_batched_tokens));
  }
  if (speculative_tokens < 0 || speculative_tokens > kMaxSpeculativeTokens) {
    return absl::InvalidArgumentError(absl::StrCat("speculative_tokens must be in [0, ",
                                                   kMaxSpeculativeTokens, "], got ",
                                                   speculative_tokens));
  }
  return absl::OkStatus();
}

Scheduler::Scheduler(const SchedulerConfig& config, BlockPool& pool,
                     std::unique_ptr<SchedulingPolicy> policy)
    : config_(config), pool_(pool), policy_(std::move(policy)) {
  assert(config_.Validate().ok());
}

absl::Status Scheduler::AddSequence(SequenceId id, std::vector<int32_t> prompt_ids,
                                    int32_t max_new_tokens) {
  if (sequences_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id, " already exists"));
  }
  if (prompt_ids.empty()) return absl::InvalidArgumentError("prompt_ids must not be empty");
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  // The last sampled token never needs KV.
  const int64_t max_positions = static_cast<int64_t>(prompt_ids.size()) + max_new_tokens - 1;
  const int64_t max_blocks = (max_positions + pool_.block_size() - 1) / pool_.block_size();
  if (max_blocks > pool_.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt_ids.size(), " tokens) plus max_new_tokens (", max_new_tokens, ") needs ",
        max_blocks, " KV blocks; the cache has ", pool_.num_blocks()));
  }
  auto seq = std::make_unique<Sequence>(id, std::move(prompt_ids), max_new_tokens, next_arrival_++);
  InsertOrdered(waiting_, seq.get());
  sequences_.emplace(id, std::move(seq));
  return absl::OkStatus();
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  int32_t budget = config_.max_batched_tokens;
  // One token for each running decode not yet scheduled in this step.
  int32_t decode_reserve =
      static_cast<int32_t>(std::count_if(running_.begin(), running_.end(), [](const Sequence* s) {
        return s->num_uncomputed_tokens() == 1;
      }));

  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence& seq = *running_[i];
    if (seq.num_uncomputed_tokens() == 1) --decode_reserve;
    int32_t num_new = std::min(seq.num_uncomputed_tokens(), budget - decode_reserve);
    if (num_new <= 0) continue;
    while (Coverable(seq) == 0) {
      const bool self = running_.back() == &seq;
      if (running_.back()->num_uncomputed_tokens() == 1 && !self) --decode_reserve;
      PreemptLast(plan);
      if (self) break;
    }
    if (i >= running_.size()) break;  // `seq` itself was preempted
    num_new = std::min(num_new, Coverable(seq));
    int32_t num_drafts = 0;
    if (seq.num_uncomputed_tokens() == 1) {
      // Drafts are worth the step only while the sequence may still emit them all.
      const int32_t remaining = seq.max_new_tokens() - seq.num_output_tokens() - 1;
      num_drafts = std::max(0, std::min({config_.speculative_tokens, remaining,
                                         budget - decode_reserve - num_new,
                                         Capacity(seq) - num_new}));
    }
    [[maybe_unused]] const bool grown =
        GrowTable(seq, seq.num_computed_tokens() + num_new + num_drafts);
    assert(grown);
    plan.sequences.push_back(MakeEntry(seq, num_new, num_drafts));
    budget -= num_new + num_drafts;
  }

  if (plan.preempted.empty()) {
    while (!waiting_.empty() && budget > 0 &&
           static_cast<int32_t>(running_.size()) < config_.max_running_seqs &&
           AdmitFront(budget, plan)) {
      budget -= plan.sequences.back().num_new_tokens();
    }
  }

  std::stable_partition(plan.sequences.begin(), plan.sequences.end(),
                        [](const ScheduledSequence& s) {
                          return s.num_new_tokens() == 1 || s.num_drafts > 0;
                        });
  return plan;
}

bool Scheduler::AdmitFront(int32_t budget, StepPlan& plan) {
  Sequence& seq = *waiting_.front();
  const int32_t block_size = pool_.block_size();
  PrefixMatch match;
  if (config_.enable_prefix_caching) {
    seq.UpdateBlockHashes(pool_.hasher(), block_size);
    // Only blocks that end before the last token: its logits must be computed.
    const int32_t eligible = (seq.num_tokens() - 1) / block_size;
    match = pool_.MatchPrefix(seq.block_hashes().first(eligible), seq.token_ids());
  }
  const int32_t num_hit = static_cast<int32_t>(match.blocks.size());
  const int32_t num_computed = num_hit * block_size;
  const int32_t num_new = std::min(seq.num_tokens() - num_computed, budget);
  const int32_t num_fresh = BlockTable::BlocksFor(num_computed + num_new, block_size) - num_hit;
  // Hits on evictable blocks take them out of what Allocate could hand out.
  if (num_fresh > pool_.NumAllocatable() - match.num_unreferenced) return false;

  waiting_.erase(waiting_.begin());
  if (config_.enable_prefix_caching) pool_.AcquirePrefix(match);
  for (BlockId id : match.blocks) seq.mutable_block_table().Append(id);
  seq.set_num_cached_blocks(num_hit);
  seq.set_num_computed_tokens(num_computed);
  seq.set_status(SequenceStatus::kRunning);
  [[maybe_unused]] const bool grown = GrowTable(seq, num_computed + num_new);
  assert(grown);
  InsertOrdered(running_, &seq);
  plan.sequences.push_back(MakeEntry(seq, num_new));
  return true;
}

void Scheduler::CommitStep(const StepPlan& plan, absl::Span<const int32_t> sampled_tokens) {
  std::vector<std::vector<int32_t>> emitted;
  emitted.reserve(sampled_tokens.size());
  for (int32_t token : sampled_tokens) emitted.push_back({token});
  CommitStep(plan, emitted);
}

void Scheduler::CommitStep(const StepPlan& plan, absl::Span<const std::vector<int32_t>> emitted) {
  assert(static_cast<int32_t>(emitted.size()) == plan.num_samples());
  size_t next_sample = 0;
  for (const ScheduledSequence& entry : plan.sequences) {
    const std::vector<int32_t>* tokens = entry.sample ? &emitted[next_sample++] : nullptr;
    auto it = sequences_.find(entry.id);
    if (it == sequences_.end()) continue;  // aborted since Schedule
    Sequence& seq = *it->second;
    assert(seq.status() == SequenceStatus::kRunning);
    assert(seq.num_computed_tokens() == entry.context_begin);
    if (tokens == nullptr) {
      seq.set_num_computed_tokens(entry.context_end());
    } else {
      assert(!tokens->empty() && static_cast<int32_t>(tokens->size()) <= 1 + entry.num_drafts);
      // The i-th emitted token follows position context_end - 1 - num_drafts + i, whose KV is
      // kept: it holds the token before it (the last known one, then the accepted drafts).
      seq.set_num_computed_tokens(entry.context_end() - entry.num_drafts +
                                  static_cast<int32_t>(tokens->size()) - 1);
      for (int32_t token : *tokens) seq.AppendToken(token);
      assert(seq.num_output_tokens() <= seq.max_new_tokens());
      if (entry.num_drafts > 0) TrimTable(seq);
    }
    if (config_.enable_prefix_caching) RegisterFullBlocks(seq);
  }
}

absl::Status Scheduler::Finish(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", id, " not found"));
  }
  if (it->second->status() != SequenceStatus::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat("sequence ", id, " is not running"));
  }
  Remove(*it->second);
  ++num_finished_;
  return absl::OkStatus();
}

absl::Status Scheduler::Abort(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", id, " not found"));
  }
  Remove(*it->second);
  ++num_aborted_;
  return absl::OkStatus();
}

const Sequence* Scheduler::Find(SequenceId id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

std::vector<SequenceId> Scheduler::waiting_ids() const {
  std::vector<SequenceId> ids;
  for (const Sequence* s : waiting_) ids.push_back(s->id());
  return ids;
}

std::vector<SequenceId> Scheduler::running_ids() const {
  std::vector<SequenceId> ids;
  for (const Sequence* s : running_) ids.push_back(s->id());
  return ids;
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.num_waiting = static_cast<int32_t>(waiting_.size());
  s.num_running = static_cast<int32_t>(running_.size());
  s.num_preemptions = num_preemptions_;
  s.num_finished = num_finished_;
  s.num_aborted = num_aborted_;
  return s;
}

bool Scheduler::GrowTable(Sequence& seq, int32_t num_tokens) {
  const int32_t needed =
      BlockTable::BlocksFor(num_tokens, pool_.block_size()) - seq.block_table().size();
  if (needed > pool_.NumAllocatable()) return false;
  for (int32_t i = 0; i < needed; ++i) seq.mutable_block_table().Append(*pool_.Allocate());
  return true;
}

int32_t Scheduler::Capacity(const Sequence& seq) const {
  return (seq.block_table().size() + pool_.NumAllocatable()) * pool_.block_size() -
         seq.num_computed_tokens();
}

int32_t Scheduler::Coverable(const Sequence& seq) const {
  return std::min(Capacity(seq), seq.num_uncomputed_tokens());
}

ScheduledSequence Scheduler::MakeEntry(const Sequence& seq, int32_t num_new_tokens,
                                       int32_t num_drafts) const {
  ScheduledSequence entry;
  entry.id = seq.id();
  entry.context_begin = seq.num_computed_tokens();
  const absl::Span<const int32_t> tokens =
      seq.token_ids().subspan(entry.context_begin, num_new_tokens);
  entry.token_ids.assign(tokens.begin(), tokens.end());
  entry.token_ids.resize(num_new_tokens + num_drafts, 0);  // draft slots, filled by the engine
  entry.num_drafts = num_drafts;
  const absl::Span<const BlockId> blocks = seq.block_table().blocks();
  entry.block_table.assign(blocks.begin(), blocks.end());
  entry.sample = entry.context_begin + num_new_tokens == seq.num_tokens();
  return entry;
}

void Scheduler::TrimTable(Sequence& seq) {
  const int32_t keep = BlockTable::BlocksFor(seq.num_tokens(), pool_.block_size());
  while (seq.block_table().size() > keep) seq.mutable_block_table().ReleaseLast(pool_);
}

void Scheduler::PreemptLast(StepPlan& plan) {
  Sequence& victim = *running_.back();
  running_.pop_back();
  victim.ResetForRecompute(pool_);
  InsertOrdered(waiting_, &victim);
  plan.preempted.push_back(victim.id());
  ++num_preemptions_;
}

void Scheduler::RegisterFullBlocks(Sequence& seq) {
  const int32_t block_size = pool_.block_size();
  const int32_t num_full = seq.num_computed_tokens() / block_size;
  if (num_full <= seq.num_cached_blocks()) return;
  seq.UpdateBlockHashes(pool_.hasher(), block_size);
  for (int32_t i = seq.num_cached_blocks(); i < num_full; ++i) {
    // A block with the same content may be cached already (two sequences with the same prefix
    // prefilled at once); this one then stays private.
    pool_.Cache(seq.block_table()[i], seq.block_hashes()[i],
                seq.token_ids().subspan(i * block_size, block_size));
  }
  seq.set_num_cached_blocks(num_full);
}

void Scheduler::InsertOrdered(std::vector<Sequence*>& queue, Sequence* seq) {
  auto at = std::upper_bound(
      queue.begin(), queue.end(), seq,
      [this](const Sequence* a, const Sequence* b) { return policy_->Before(*a, *b); });
  queue.insert(at, seq);
}

void Scheduler::Remove(Sequence& seq) {
  std::vector<Sequence*>& queue = seq.status() == SequenceStatus::kRunning ? running_ : waiting_;
  queue.erase(std::find(queue.begin(), queue.end(), &seq));
  seq.mutable_block_table().ReleaseAll(pool_);
  sequences_.erase(seq.id());
}

absl::Status Scheduler::CheckInvariants() const {
  if (absl::Status s = pool_.CheckInvariants(); !s.ok()) return s;
  const int32_t block_size = pool_.block_size();
  std::vector<int32_t> refs(pool_.num_blocks(), 0);
  const auto check_queue = [&](const std::vector<Sequence*>& queue, bool running) -> absl::Status {
    for (size_t i = 0; i < queue.size(); ++i) {
      const Sequence& s = *queue[i];
      const std::string name = absl::StrCat("sequence ", s.id(), ": ");
      if (Find(s.id()) != &s) return absl::InternalError(name + "queued but not indexed");
      if ((s.status() == SequenceStatus::kRunning) != running) {
        return absl::InternalError(name + "status does not match its queue");
      }
      if (i > 0 && policy_->Before(s, *queue[i - 1])) {
        return absl::InternalError(name + "out of policy order");
      }
      const int32_t table = s.block_table().size();
      if (running ? (s.num_computed_tokens() >= s.num_tokens() ||
                     table < BlockTable::BlocksFor(s.num_computed_tokens(), block_size) ||
                     table > BlockTable::BlocksFor(s.num_tokens(), block_size) ||
                     s.num_cached_blocks() > table)
                  : (s.num_computed_tokens() != 0 || table != 0 || s.num_cached_blocks() != 0)) {
        return absl::InternalError(absl::StrCat(name, s.num_computed_tokens(), " of ",
                                                s.num_tokens(), " tokens computed, ", table,
                                                " blocks, ", s.num_cached_blocks(), " cached"));
      }
      for (BlockId id : s.block_table().blocks()) ++refs[id];
    }
    return absl::OkStatus();
  };
  if (absl::Status s = check_queue(waiting_, false); !s.ok()) return s;
  if (absl::Status s = check_queue(running_, true); !s.ok()) return s;
  if (waiting_.size() + running_.size() != sequences_.size()) {
    return absl::InternalError(absl::StrCat(sequences_.size(), " sequences, ", waiting_.size(),
                                            " waiting, ", running_.size(), " running"));
  }
  if (static_cast<int32_t>(running_.size()) > config_.max_running_seqs) {
    return absl::InternalError(absl::StrCat(running_.size(), " sequences running"));
  }
  for (BlockId id = 0; id < pool_.num_blocks(); ++id) {
    if (pool_.ref_count(id) != refs[id]) {
      return absl::InternalError(absl::StrCat("block ", id, ": ref_count ", pool_.ref_count(id),
                                              ", held by ", refs[id], " block tables"));
    }
  }
  return absl::OkStatus();
}

}  // namespace dsv3
