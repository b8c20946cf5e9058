// Scheduler: continuous batching over a paged latent-KV cache. Pure host logic: no threads, no
// model; the engine thread calls it once per step:
//
//   StepPlan plan = scheduler.Schedule();         // which tokens of which sequences run
//   ... run plan.ToForwardBatch(), sample one token per plan entry with sample = true ...
//   scheduler.CommitStep(plan, sampled_tokens);   // their KV is now cached; tokens appended
//   ... check stop conditions; scheduler.Finish(id) for finished sequences ...
//
// Abort(id) may come at any point between these calls.
//
// Each step, under a token budget (max_batched_tokens) and a seat limit (max_running_seqs):
//   1. Running sequences, in policy order, each get their remaining tokens (1 for a decode, the
//      rest of the prompt for a partly prefilled one) up to the budget, where one token stays
//      reserved for each running decode later in the order, so decodes are never starved by
//      prefill chunks. A sequence that cannot get a block for even one token preempts the last
//      running sequence in policy order (the newest, under FCFS) until it can, possibly itself.
//      A prefill chunk is cut to the blocks available.
//   2. Unless a sequence was preempted in this step, waiting sequences are admitted in policy
//      order while seats, budget and blocks last; the first one that does not fit stops
//      admission. A sequence is admitted only if blocks exist for its whole first chunk.
//
// Preemption is by recomputation: the victim releases its blocks, keeps its tokens (prompt and
// output), and later recomputes their KV; its sampling state lives outside the scheduler, so it
// resumes with the same output.
//
// Prefix caching: on admission, the leading full blocks of a sequence's tokens that are in the
// pool's prefix cache are shared instead of computed, and its first chunk starts after them
// (context_begin). Only blocks that end before the last known token can hit, so the last token
// is always computed and yields logits (when the whole prompt is cached, the block holding its
// last token is computed again). Blocks are registered in the cache as they fill up.
//
// Speculative decoding (speculative_tokens = K > 0): a decode entry also gets num_drafts <= K
// slots for draft tokens (as many as the budget after the decode reserve, the blocks without
// preempting, and the sequence's remaining max_new_tokens allow: the step may emit
// num_drafts + 1 tokens). Blocks are reserved for all of them; CommitStep then takes the tokens
// the step emitted (the accepted drafts and one more), counts as computed only the positions
// whose tokens were kept, and frees blocks past the sequence's tokens: rejected drafts leave
// nothing behind. Drafts never reach token_ids, so the prefix cache only sees committed tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/kv/block_pool.h"
#include "engine/scheduler/scheduling_policy.h"
#include "engine/scheduler/sequence.h"
#include "engine/scheduler/step_plan.h"

namespace dsv3 {

inline constexpr int32_t kMaxSpeculativeTokens = 8;

struct SchedulerConfig {
  int32_t max_batched_tokens = 8192;  // new tokens per step, all sequences together
  int32_t max_running_seqs = 256;
  bool enable_prefix_caching = true;
  int32_t speculative_tokens = 0;  // draft slots per decode (MTP speculative decoding); 0: off

  // InvalidArgument naming the field: both limits >= 1, max_batched_tokens >= max_running_seqs
  // (every running sequence can decode in one step), speculative_tokens in
  // [0, kMaxSpeculativeTokens].
  absl::Status Validate() const;
};

struct SchedulerStats {
  int32_t num_waiting = 0;  // preempted ones included
  int32_t num_running = 0;
  int64_t num_preemptions = 0;
  int64_t num_finished = 0;
  int64_t num_aborted = 0;
};

class Scheduler {
 public:
  // `config` must be valid (asserted). `pool` is used by this scheduler only and must outlive
  // it; its block size is the KV block size of every plan.
  Scheduler(const SchedulerConfig& config, BlockPool& pool,
            std::unique_ptr<SchedulingPolicy> policy = std::make_unique<FcfsPolicy>());
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a new sequence. Fails with AlreadyExists for an id in use, and with InvalidArgument
  // for an empty prompt, max_new_tokens < 1, or a sequence whose KV (prompt + max_new_tokens - 1
  // positions) could never fit in the pool.
  absl::Status AddSequence(SequenceId id, std::vector<int32_t> prompt_ids, int32_t max_new_tokens);

  // Plans the next step (see the file comment). May preempt sequences; an empty plan means there
  // is nothing to run.
  StepPlan Schedule();

  // Records that `plan` (the last Schedule result) ran: each entry's tokens now have KV, and
  // `sampled_tokens` (one per entry with sample = true, in plan order) are appended to their
  // sequences. Entries of sequences aborted since Schedule are skipped. The caller must Finish a
  // sequence before it exceeds max_new_tokens outputs.
  void CommitStep(const StepPlan& plan, absl::Span<const int32_t> sampled_tokens);
  // The same with several tokens per sampling entry: `emitted[i]` (1 to 1 + num_drafts tokens)
  // for the i-th entry with sample = true. An entry with drafts verified them: emitted holds the
  // accepted drafts and the token after them (fewer when a stop condition cut the step short), so
  // positions [context_begin, context_begin + emitted.size()) keep their KV and the rest is
  // dropped, with the blocks past the sequence's tokens.
  void CommitStep(const StepPlan& plan, absl::Span<const std::vector<int32_t>> emitted);

  // Removes a running sequence that has finished, releasing its blocks (full ones stay in the
  // prefix cache). NotFound for an unknown id, FailedPrecondition when not running.
  absl::Status Finish(SequenceId id);
  // Removes a sequence in any state, releasing its blocks. NotFound for an unknown id.
  absl::Status Abort(SequenceId id);

  // The sequence, or nullptr once finished or aborted (or never added).
  const Sequence* Find(SequenceId id) const;
  // Ids of the waiting (preempted included) and running sequences, in policy order.
  std::vector<SequenceId> waiting_ids() const;
  std::vector<SequenceId> running_ids() const;
  bool HasWork() const { return !waiting_.empty() || !running_.empty(); }
  SchedulerStats stats() const;
  const SchedulerConfig& config() const { return config_; }

  // The pool's invariants, plus: each block's ref_count equals the number of block tables that
  // hold it; sequences' states, token counts and tables agree; queues are in policy order.
  absl::Status CheckInvariants() const;

 private:
  // Blocks for the running sequence `seq` to hold positions [0, num_tokens); false, changing
  // nothing, when the pool has too few.
  bool GrowTable(Sequence& seq, int32_t num_tokens);
  // Positions past the computed ones that `seq`'s table plus every allocatable block can hold.
  int32_t Capacity(const Sequence& seq) const;
  // Tokens `seq` could still add with its table plus every allocatable block.
  int32_t Coverable(const Sequence& seq) const;
  ScheduledSequence MakeEntry(const Sequence& seq, int32_t num_new_tokens,
                              int32_t num_drafts = 0) const;
  // Frees the blocks of `seq`'s table past its tokens (after rejected drafts).
  void TrimTable(Sequence& seq);
  // Moves running_.back() to the waiting queue, releasing its blocks.
  void PreemptLast(StepPlan& plan);
  // Tries to admit waiting_.front() with a first chunk of at most `budget` tokens.
  bool AdmitFront(int32_t budget, StepPlan& plan);
  void RegisterFullBlocks(Sequence& seq);
  void InsertOrdered(std::vector<Sequence*>& queue, Sequence* seq);
  void Remove(Sequence& seq);

  SchedulerConfig config_;
  BlockPool& pool_;
  std::unique_ptr<SchedulingPolicy> policy_;
  absl::flat_hash_map<SequenceId, std::unique_ptr<Sequence>> sequences_;
  std::vector<Sequence*> waiting_;  // policy order
  std::vector<Sequence*> running_;  // policy order
  int64_t next_arrival_ = 0;
  int64_t num_preemptions_ = 0;
  int64_t num_finished_ = 0;
  int64_t num_aborted_ = 0;
};

}  // namespace dsv3
