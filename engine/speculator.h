// Speculator: the engine's side of MTP speculative decoding (SPEC section 3), used by the engine
// loop when speculative_tokens K > 0. Per sequence it keeps the next step's first draft; each step:
//
//   Draft(plan)     after Schedule: chains the MTP module on its own output to fill the draft slots
//                   of every decode entry (draft j+1 from draft j at the position after it);
//   Verify(entry)   after the model's forward over [last token, drafts]: rejection sampling
//                   position by position, the accepted drafts plus one more token;
//   Extend(plan)    after CommitStep: runs the MTP module over every position the step computed
//                   and kept (main hidden state h_i and the now known token i+1), which writes the
//                   MTP layer's cache for them, and drafts the next step's first token from the
//                   last one of each sampling entry.
//
// The MTP cache thus holds, for every computed position, the entry made from the committed
// tokens; entries that chained drafts wrote past them are rewritten by the next Extend. Draft
// distributions q are the MTP logits under the request's sampling parameters (penalties as of
// the committed output): any q keeps the output lossless, a closer one is accepted more often.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/model/forward_batch.h"
#include "engine/model_runner.h"
#include "engine/sampling/sampler.h"
#include "engine/scheduler/data_parallel_scheduler.h"

namespace dsv3 {

// What drafting needs of one request; null fields when the request is gone (aborted).
struct DraftRequest {
  const SamplingParams* params = nullptr;
  SequenceSamplingState* state = nullptr;
};

// Counts per draft position j (0: the first draft of a step), over the whole engine's life.
struct SpeculationStats {
  std::vector<int64_t> proposed;  // drafts verified at position j
  std::vector<int64_t> accepted;  // of those, accepted
};

class Speculator {
 public:
  using RequestLookup = absl::FunctionRef<DraftRequest(SequenceId)>;

  // `runner` must have the cache allocated with the MTP layer; both must outlive this object.
  Speculator(ModelRunner& runner, Sampler& sampler, int32_t max_drafts);

  // Fills token_ids[1, 1 + num_drafts) of every entry with drafts. Fails when an MTP step fails
  // (the model group broke).
  absl::Status Draft(StepPlan& plan, RequestLookup lookup);

  // The tokens `entry` (sample = true) emits from its logits rows ([1 + num_drafts, V]): the
  // accepted drafts and the token after them, each with its logprobs, recorded in `state`.
  std::vector<SampledToken> Verify(const ScheduledSequence& entry, absl::Span<const float> logits,
                                   const SamplingParams& params, SequenceSamplingState& state);

  // After scheduler.CommitStep(plan, ...): MTP over the kept positions of every entry whose
  // sequence is still known to `scheduler`, using the final hidden states `hidden` of every row
  // of `batch` (plan.ToForwardBatch()). Fails when the MTP step fails.
  absl::Status Extend(const StepPlan& plan, const ForwardBatch& batch,
                      absl::Span<const float> hidden, const DataParallelScheduler& scheduler,
                      RequestLookup lookup);

  // Drops what is kept for a sequence that ended or was preempted.
  void Forget(SequenceId id) { drafts_.erase(id); }

  const SpeculationStats& stats() const { return stats_; }

 private:
  // One sequence's drafts of the coming step; draft 0 comes from Extend, the rest from Draft.
  struct Drafts {
    std::vector<int32_t> tokens;
    std::vector<std::vector<float>> q;  // [j]: the distribution draft j was drawn from, [V]
    std::vector<float> hidden;          // [H] the MTP output state after the last draft
  };

  // Draws the next draft of `d` from MTP logits `logits` [V] and its output state `hidden` [H].
  void AddDraft(Drafts& d, absl::Span<const float> logits, absl::Span<const float> hidden,
                const DraftRequest& request);

  ModelRunner& runner_;
  Sampler& sampler_;
  const int64_t vocab_;
  const int64_t hidden_size_;
  absl::flat_hash_map<SequenceId, Drafts> drafts_;
  std::vector<float> p_;  // scratch: the target distribution of one position
  SpeculationStats stats_;
};

}  // namespace dsv3
