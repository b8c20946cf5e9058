// Which steps the decode graph runner (step_graphs.h) runs as whole-step graphs and how it pads
// them: pure host logic on ForwardBatch, tested in CI (unit_model_graph_batch_test).
//
// A graph step is a decode (one new token per sequence) or speculative verify step (K + 1 per
// sequence): every sequence has the same number k <= kAbsorbedMaxNewTokens of new tokens, rows in
// sequence order, and (unless the backend's decode attention reads each item's own keys only)
// contexts even enough for decode by GEMMs. It runs at the smallest padded size
// B >= b of GraphBatchSizes, with attention padded to the context bucket of its longest
// context, so one capture serves every step of the same (B, k, context bucket).
//
// Under data-parallel attention every rank runs its own part of a step (attention_split.h), and
// the MoE layers' collectives must be the same on every rank: DataParallelGraphShape picks one
// shape for all of them.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "engine/model/forward_batch.h"
#include "engine/parallel/attention_split.h"

namespace dsv3 {

struct GraphStepShape {
  int32_t sequences = 0;            // B: the padded number of sequences
  int32_t tokens_per_sequence = 0;  // k: decode 1, verify K + 1
  int64_t context_bucket = 0;       // GraphContextBucket of the longest context
  auto operator<=>(const GraphStepShape&) const = default;

  int32_t rows() const { return sequences * tokens_per_sequence; }  // B k, at most kMaxGraphTokens
};

// The graph shape of `batch`, or nullopt when it must run eagerly: sequences of different
// numbers of new tokens (prefill, mixed steps), more than kAbsorbedMaxNewTokens each, rows out
// of sequence order, more sequences than the largest of `sizes`, more than kMaxGraphTokens
// tokens once padded, or, with `even_contexts_needed`, contexts too uneven for decode by GEMMs.
std::optional<GraphStepShape> GraphShapeOf(const ForwardBatch& batch,
                                           std::span<const int32_t> sizes,
                                           bool even_contexts_needed);

// `batch` padded to `shape`: the real sequences first and unchanged (their block tables cut or
// extended with `scratch_block` to cover the context bucket exactly, so that every step of the
// shape has plans of the same size), then B - b padding sequences of k tokens (id 0) at
// positions [0, k) whose block tables are all `scratch_block`: their latents go to a block no
// sequence owns, and they attend only over what they wrote. Every row's logits are asked for
// (logits_rows = [0, B k)), and every row's hidden state when `with_hidden`; the caller reads the
// real rows back. max_rank_tokens is kept (under data-parallel attention the caller sets it to
// shape.rows(): DataParallelGraphShape). `shape` must be GraphShapeOf(batch, ...), or
// DataParallelGraphShape(parts, ...) for one of `parts`, which may have no sequence (an idle
// rank: B padding sequences).
ForwardBatch PadForGraph(const ForwardBatch& batch, const GraphStepShape& shape,
                         int32_t block_size, int32_t scratch_block, bool with_hidden);

// Data-parallel attention (--dp-attention): the one shape at which every rank runs its part of a
// step as a graph step, or nullopt when every rank runs the step eagerly. `parts` holds every
// rank's part (SplitForAttentionRank), which every rank computes alike from the broadcast step,
// so every rank gets the same answer. The shape is the largest of the parts' padded sizes
// (GraphShapeOf), their common k and the longest context bucket; every rank pads to it, one with
// fewer sequences or none (an idle rank: padding rows only) included, as vLLM pads its
// data-parallel ranks to one batch size. So every rank runs B k rows, makes the same collectives
// (the MoE layers' capacity C is B k <= kMaxGraphTokens, within the fixed-capacity dispatch's
// range) and steps the same graph key through measure, capture and replay on the same steps.
// nullopt when a part with sequences has no graph shape of its own (prefill and mixed steps,
// too many sequences or tokens, or contexts too uneven where `even_contexts_needed`), the parts
// differ in k, or no part has a sequence.
std::optional<GraphStepShape> DataParallelGraphShape(std::span<const AttentionRankPart> parts,
                                                     std::span<const int32_t> sizes,
                                                     bool even_contexts_needed);

}  // namespace dsv3
