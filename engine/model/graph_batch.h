// Which steps the decode graph runner (step_graphs.h) runs as whole-step graphs and how it pads
// them: pure host logic on ForwardBatch, tested in CI (unit_model_graph_batch_test).
//
// A graph step is a decode (one new token per sequence) or speculative verify step (K + 1 per
// sequence): every sequence has the same number k <= kAbsorbedMaxNewTokens of new tokens, rows in
// sequence order, and (unless the backend's decode attention reads each item's own keys only)
// contexts even enough for decode by GEMMs. It runs at the smallest padded size
// B >= b of GraphBatchSizes, with attention padded to the context bucket of its longest
// context, so one capture serves every step of the same (B, k, context bucket).
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "engine/model/forward_batch.h"

namespace dsv3 {

struct GraphStepShape {
  int32_t sequences = 0;            // B: the padded number of sequences
  int32_t tokens_per_sequence = 0;  // k: decode 1, verify K + 1
  int64_t context_bucket = 0;       // GraphContextBucket of the longest context
  auto operator<=>(const GraphStepShape&) const = default;
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
// real rows back. `shape` must be GraphShapeOf(batch, ...).
ForwardBatch PadForGraph(const ForwardBatch& batch, const GraphStepShape& shape,
                         int32_t block_size, int32_t scratch_block, bool with_hidden);

}  // namespace dsv3
