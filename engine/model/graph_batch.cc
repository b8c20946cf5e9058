#include "engine/model/graph_batch.h"

#include <algorithm>
#include <cassert>

#include "engine/backend/graph_policy.h"
#include "engine/model/expert_parallel_moe.h"

namespace dsv3 {

// A data-parallel graph step's MoE layers take the fixed-capacity dispatch (no host
// synchronization) at C = its rows.
static_assert(kMaxGraphTokens <= kFixedCapacityMaxTokens);

std::optional<GraphStepShape> GraphShapeOf(const ForwardBatch& batch,
                                           std::span<const int32_t> sizes,
                                           bool even_contexts_needed) {
  if (batch.sequences.empty()) return std::nullopt;
  const int32_t k = batch.sequences.front().num_tokens;
  if (k < 1 || k > kAbsorbedMaxNewTokens) return std::nullopt;
  int64_t max_context = 0, total_context = 0;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const SequenceSlice& seq = batch.sequences[s];
    if (seq.num_tokens != k || seq.token_begin != static_cast<int32_t>(s) * k) {
      return std::nullopt;
    }
    for (int32_t i = 0; i < k; ++i) {
      const int64_t context = seq.context_begin + i + 1;  // the token's causal prefix
      max_context = std::max(max_context, context);
      total_context += context;
    }
  }
  const int32_t b = static_cast<int32_t>(batch.sequences.size());
  if (batch.num_tokens() != b * k) return std::nullopt;
  const std::optional<int32_t> padded = PaddedBatchSize(sizes, b);
  if (!padded || int64_t{*padded} * k > kMaxGraphTokens) return std::nullopt;
  if (even_contexts_needed &&
      !EvenEnoughForGemmDecode(batch.num_tokens(), total_context, max_context)) {
    return std::nullopt;
  }
  return GraphStepShape{*padded, k, GraphContextBucket(max_context)};
}

ForwardBatch PadForGraph(const ForwardBatch& batch, const GraphStepShape& shape,
                         int32_t block_size, int32_t scratch_block, bool with_hidden) {
  const int32_t k = shape.tokens_per_sequence;
  const size_t blocks = static_cast<size_t>((shape.context_bucket + block_size - 1) / block_size);
  assert(static_cast<int32_t>(batch.sequences.size()) <= shape.sequences);
  ForwardBatch padded;
  padded.max_rank_tokens = batch.max_rank_tokens;
  padded.token_ids = batch.token_ids;
  padded.token_ids.resize(static_cast<size_t>(shape.sequences) * k, 0);
  padded.sequences = batch.sequences;
  for (SequenceSlice& seq : padded.sequences) seq.block_table.resize(blocks, scratch_block);
  for (int32_t s = static_cast<int32_t>(batch.sequences.size()); s < shape.sequences; ++s) {
    padded.sequences.push_back({s * k, k, 0, std::vector<int32_t>(blocks, scratch_block)});
  }
  const int32_t rows = shape.sequences * k;
  padded.logits_rows.resize(rows);
  for (int32_t r = 0; r < rows; ++r) padded.logits_rows[r] = r;
  if (with_hidden) padded.hidden_rows = padded.logits_rows;
  return padded;
}

std::optional<GraphStepShape> DataParallelGraphShape(std::span<const AttentionRankPart> parts,
                                                     std::span<const int32_t> sizes,
                                                     bool even_contexts_needed) {
  std::optional<GraphStepShape> common;
  for (const AttentionRankPart& part : parts) {
    if (part.batch.sequences.empty()) continue;  // idle: pads to the common shape
    const std::optional<GraphStepShape> own = GraphShapeOf(part.batch, sizes, even_contexts_needed);
    if (!own) return std::nullopt;
    if (!common) {
      common = own;
      continue;
    }
    if (own->tokens_per_sequence != common->tokens_per_sequence) return std::nullopt;
    common->sequences = std::max(common->sequences, own->sequences);
    common->context_bucket = std::max(common->context_bucket, own->context_bucket);
  }
  return common;
}

}  // namespace dsv3
