// StepPlan: what the scheduler decided for one engine step. Plain data: it holds copies of the
// token ids and block tables it needs, so it stays valid whatever happens to the sequences later
// and can be turned into the model's ForwardBatch on any rank.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/kv/block_pool.h"
#include "engine/model/forward_batch.h"
#include "engine/scheduler/sequence.h"

namespace dsv3 {

struct ScheduledSequence {
  SequenceId id = 0;
  // The new tokens, at positions [context_begin, context_begin + token_ids.size()); the KV cache
  // holds positions [0, context_begin) already.
  std::vector<int32_t> token_ids;
  int32_t context_begin = 0;
  // Covers positions [0, context_end()): block i holds positions [i * block_size, ...).
  std::vector<BlockId> block_table;
  // True when the new tokens reach the end of the sequence's known tokens, so the logits of the
  // last one give the next token; false for a prefill chunk that leaves tokens for later steps.
  bool sample = false;
  // Speculative decoding: the last num_drafts of token_ids are slots for draft tokens, which the
  // engine fills (token_ids[1, 1 + num_drafts)) before the step runs; the step verifies them, so
  // every one of the 1 + num_drafts rows yields logits. 0 for everything but decodes.
  int32_t num_drafts = 0;
  // Data-parallel attention (--dp-attention): the rank whose KV cache holds the sequence (and
  // whose pool the block ids index). 0 otherwise.
  int32_t attention_rank = 0;

  int32_t num_new_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t context_end() const { return context_begin + num_new_tokens(); }
};

struct StepPlan {
  // Single-token entries (decodes) first, then longer prefill chunks; each group in scheduling
  // order. Under data-parallel attention: each rank's entries in that order, rank after rank.
  std::vector<ScheduledSequence> sequences;
  // Sequences preempted during this step; they are not in `sequences`.
  std::vector<SequenceId> preempted;

  bool empty() const { return sequences.empty(); }
  int32_t num_tokens() const;
  int32_t num_samples() const;
  // The model's batch: sequences' tokens concatenated in order, and logits_rows = the last
  // 1 + num_drafts rows of each entry with sample = true, in order (the order CommitStep expects
  // sampled tokens in).
  ForwardBatch ToForwardBatch() const;
};

}  // namespace dsv3
