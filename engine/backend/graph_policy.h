// Which steps run as whole-step CUDA graphs, at which padded sizes, the context their attention
// pads to, and how graph memory is counted against its bound (engine/model/step_graphs.h,
// engine/backend/cuda/cuda_step_graphs.cc). Host logic only, so that unit tests pin it without a
// GPU (unit_backend_graph_memory_test).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace dsv3 {

// Graph steps have at most this many tokens (padding included): the grouped MoE path's default
// limit, beyond which the MoE lays out 64-row tiles and prefill-sized temporaries.
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

// Decode by GEMMs pads every item (one per new token) to the longest context; it is chosen (and
// a step may be graphed) when that wastes at most half the work.
inline bool EvenEnoughForGemmDecode(int64_t items, int64_t total_context, int64_t max_context) {
  return items >= 1 && 2 * total_context >= items * max_context;
}

// The padded batch sizes (in sequences) graphs are captured at, nano-vllm's and vLLM's way:
// 1, 2, 4, 8, 16, 24, 32, then steps of 16 up to 128 and of 32 beyond, up to `max_sequences`
// (which is always the last size).
inline std::vector<int32_t> GraphBatchSizes(int32_t max_sequences) {
  std::vector<int32_t> sizes;
  for (int32_t s = 1; s <= max_sequences;) {
    sizes.push_back(s);
    s = s < 8 ? 2 * s : s < 32 ? s + 8 : s < 128 ? s + 16 : s + 32;
  }
  if (max_sequences >= 1 && sizes.back() != max_sequences) sizes.push_back(max_sequences);
  return sizes;
}

// The smallest of `sizes` (ascending) that holds `sequences`; nullopt past the largest.
inline std::optional<int32_t> PaddedBatchSize(std::span<const int32_t> sizes, int32_t sequences) {
  const auto it = std::lower_bound(sizes.begin(), sizes.end(), sequences);
  if (it == sizes.end()) return std::nullopt;
  return *it;
}

// The capture arena's size when a graph needs `needed` bytes of temporaries and the arena has
// `current`: unchanged when it fits, else grown by at least a quarter so that a few captures
// of rising sizes do not each make an arena (the older ones stay for their graphs).
inline int64_t CaptureArenaBytes(int64_t current, int64_t needed) {
  if (needed <= current) return current;
  return std::max(needed, current + current / 4);
}

// Graph memory (capture arenas, the graph step plan's workspace, instantiated graphs) against
// the bound that KV sizing sets aside (--cuda-graph-memory-mb).
class GraphMemoryBudget {
 public:
  explicit GraphMemoryBudget(int64_t limit = INT64_MAX) : limit_(limit) {}
  void set_limit(int64_t limit) { limit_ = limit; }
  int64_t limit() const { return limit_; }
  int64_t used() const { return used_; }
  bool Fits(int64_t more) const { return more <= limit_ - used_; }
  void Add(int64_t bytes) { used_ += bytes; }
  void Remove(int64_t bytes) { used_ -= std::min(bytes, used_); }

 private:
  int64_t limit_;
  int64_t used_ = 0;
};

}  // namespace dsv3
