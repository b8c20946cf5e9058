// ForwardBatch: one step of work for the model, a flattened batch of new tokens from several
// sequences. It is plain data (no pointers into engine state) so that rank 0 can serialize it and
// broadcast it to tensor-parallel workers.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dsv3 {

// The new tokens of one sequence in this step. They occupy rows
// [token_begin, token_begin + num_tokens) of the flattened batch and positions
// [context_begin, context_begin + num_tokens). The KV cache already holds positions
// [0, context_begin); this step writes the new ones.
struct SequenceSlice {
  int32_t token_begin = 0;
  int32_t num_tokens = 0;
  int32_t context_begin = 0;
  // Physical KV block ids covering positions [0, context_begin + num_tokens):
  // position p lives in block block_table[p / block_size], slot p % block_size.
  std::vector<int32_t> block_table;
  // Data-parallel attention (--dp-attention): the rank that runs this sequence, in whose KV
  // cache block_table lives (SplitForAttentionRank). 0 otherwise.
  int32_t attention_rank = 0;

  int32_t context_end() const { return context_begin + num_tokens; }
};

struct ForwardBatch {
  std::vector<int32_t> token_ids;  // [T]
  std::vector<SequenceSlice> sequences;
  // Rows of the flattened batch whose logits the caller wants, in output order
  // (usually the last new token of each sequence; every row for --logits-out).
  std::vector<int32_t> logits_rows;
  // Rows whose final hidden states (after model.norm) the caller wants, in output order: the MTP
  // module's input. Sent to every rank (batch_codec): under tensor parallelism only rank 0
  // returns them, under data-parallel attention each rank its own, gathered on rank 0.
  std::vector<int32_t> hidden_rows;
  // Data-parallel attention: the most tokens any attention rank runs in this step, the row
  // capacity C of the MoE layers' fixed-capacity dispatch (expert_parallel_moe.h). Every rank's
  // part carries the same value: SplitForAttentionRank sets it from the whole step, so it is not
  // sent. -1: not known (a batch not split by rank); the MoE layers then use the compacted layout.
  int32_t max_rank_tokens = -1;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
};

// Whether `rows` is 0, 1, ..., t - 1: every row of a step of t tokens, in order (no gather).
inline bool IsEveryRow(std::span<const int32_t> rows, int64_t t) {
  if (static_cast<int64_t>(rows.size()) != t) return false;
  for (int64_t r = 0; r < t; ++r) {
    if (rows[r] != r) return false;
  }
  return true;
}

}  // namespace dsv3
