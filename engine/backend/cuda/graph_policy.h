// Which decode steps run as CUDA graphs, and the context their attention pads to
// (cuda_graphs.cc). Host logic only, so that unit tests pin it without a GPU.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

namespace dsv3 {

// Decode batches up to this many tokens run as graphs (the grouped MoE path's default limit:
// larger MoE batches synchronize with the host).
inline constexpr int64_t kMaxGraphTokens = 256;

// Sequences of at most this many new tokens (decode, and speculative verify steps of K + 1
// tokens) attend in the absorbed form under MlaMode::kAuto: one query per new token over its own
// causal prefix of the cache, the same computation a decode step does for that token. Steps whose
// sequences all have the same number of such tokens can run as graphs.
inline constexpr int64_t kAbsorbedMaxNewTokens = 16;

// The context decode GEMMs pad to in a graph step: multiples of 256 up to 2048, then eight
// steps per doubling, so padding costs at most 1/8 of the attention while a growing context
// changes bucket every 256+ steps.
inline int64_t GraphContextBucket(int64_t context) {
  if (context <= 2048) return (std::max<int64_t>(context, 1) + 255) / 256 * 256;
  const int64_t granule = static_cast<int64_t>(std::bit_floor(static_cast<uint64_t>(context))) / 8;
  return (context + granule - 1) / granule * granule;
}

}  // namespace dsv3
