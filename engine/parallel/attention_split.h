// Data-parallel attention (--dp-attention) splits one engine step by attention rank: rank 0's
// scheduler plans every rank's sequences in one ForwardBatch (SequenceSlice::attention_rank says
// whose each is; batch_codec ships the whole batch to every rank), and each rank runs only its
// part. The logits (and hidden states) come back to rank 0 in the step's order
// (batch.logits_rows, batch.hidden_rows), rank by rank.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model/forward_batch.h"

namespace dsv3 {

struct AttentionRankPart {
  // The rank's sequences in step order, their rows renumbered from 0; logits_rows and
  // hidden_rows are the step's rows of each kind that fall in them, renumbered the same way.
  ForwardBatch batch;
  // For each of batch.logits_rows: its index in the step's logits_rows (the output row its
  // logits belong in).
  std::vector<int32_t> output_rows;
  // For each of batch.hidden_rows: its index in the step's hidden_rows.
  std::vector<int32_t> hidden_output_rows;
  // For each row of batch: its row in the step (an input given per step row, such as the MTP
  // module's hidden states, goes to the rank's rows through it).
  std::vector<int32_t> step_rows;
};

// The part of `batch` that `rank` runs (empty when the rank has no sequence this step: the rank
// still runs the step, for its collectives), its max_rank_tokens the most tokens of any rank
// (the same in every rank's part). `batch` must be valid (batch_codec's checks).
AttentionRankPart SplitForAttentionRank(const ForwardBatch& batch, int rank);

}  // namespace dsv3
