#include "engine/scheduler/step_plan.h"

#include <utility>

namespace dsv3 {

int32_t StepPlan::num_tokens() const {
  int32_t n = 0;
  for (const ScheduledSequence& s : sequences) n += s.num_new_tokens();
  return n;
}

int32_t StepPlan::num_samples() const {
  int32_t n = 0;
  for (const ScheduledSequence& s : sequences) n += s.sample;
  return n;
}

ForwardBatch StepPlan::ToForwardBatch() const {
  ForwardBatch batch;
  batch.token_ids.reserve(num_tokens());
  batch.sequences.reserve(sequences.size());
  for (const ScheduledSequence& s : sequences) {
    SequenceSlice slice;
    slice.token_begin = batch.num_tokens();
    slice.num_tokens = s.num_new_tokens();
    slice.context_begin = s.context_begin;
    slice.block_table = s.block_table;
    slice.attention_rank = s.attention_rank;
    batch.token_ids.insert(batch.token_ids.end(), s.token_ids.begin(), s.token_ids.end());
    if (s.sample) {
      for (int32_t r = batch.num_tokens() - 1 - s.num_drafts; r < batch.num_tokens(); ++r) {
        batch.logits_rows.push_back(r);
      }
    }
    batch.sequences.push_back(std::move(slice));
  }
  return batch;
}

}  // namespace dsv3
