// MoeAlign (kernels/moe_grouped.cuh): the routed rows grouped expert by expert for the grouped
// FP8 GEMMs, in one block on the device.
#include <cassert>
#include <cstdint>

#include "kernels/device_utils.cuh"
#include "kernels/launch.cuh"
#include "kernels/moe_grouped.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kMaxExperts = 1024;

constexpr int kAlignThreads = kMaxExperts;  // one thread per expert

// One block of kAlignThreads, thread e for expert e: counts per expert, a block-wide exclusive
// scan of the experts' (padded) row counts and of their active flags, then placement by
// atomics. Experts keep their order in `begin` and `active`.
__global__ void __launch_bounds__(kAlignThreads) MoeAlignKernel(MoeAlignParams p) {
  KernelPrologue();
  __shared__ int32_t count[kMaxExperts];
  __shared__ int32_t fill[kMaxExperts];
  __shared__ int32_t warp_rows[kAlignThreads / 32], warp_active[kAlignThreads / 32];
  __shared__ int32_t warp_chunks[kAlignThreads / 32];
  const int64_t tile = p.tile_rows > 0 ? p.tile_rows : 1;
  const int64_t tokens = p.entries / p.top_k;
  // Entries: the routed ones, then each token's shared-expert entry.
  const int64_t entries = p.entries + (p.shared_expert >= 0 ? tokens : 0);
  auto expert_of = [&](int64_t i) {
    return i < p.entries ? p.ids[i] - p.expert_begin : p.shared_expert;
  };
  auto token_at = [&](int64_t i) { return i < p.entries ? i / p.top_k : i - p.entries; };
  const int64_t rows = p.tile_rows > 0 ? p.capacity_rows : entries;  // token_of's length
  for (int64_t e = threadIdx.x; e < p.experts; e += blockDim.x) count[e] = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) p.token_of[r] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < entries; i += blockDim.x) {
    const int64_t e = expert_of(i);
    if (e >= 0 && e < p.experts) atomicAdd(&count[e], 1);
  }
  __syncthreads();
  const int expert = threadIdx.x, lane = expert % 32, warp = expert / 32;
  const int32_t c = expert < p.experts ? count[expert] : 0;
  const int32_t own_rows = static_cast<int32_t>((c + tile - 1) / tile * tile);
  const int32_t own_active = c > 0 ? 1 : 0;
  const int32_t own_chunks =
      static_cast<int32_t>((own_rows + kGroupedChunkRows - 1) / kGroupedChunkRows);
  const int32_t rows_in_warp = WarpInclusiveSum(own_rows);
  const int32_t active_in_warp = WarpInclusiveSum(own_active);
  // The chunks' scan only where they are asked for (a uniform branch): decode steps of up to 8
  // tokens, on the latency path of every layer, have no use for them.
  const bool chunks = p.chunks.expert != nullptr;
  const int32_t chunks_in_warp = chunks ? WarpInclusiveSum(own_chunks) : 0;
  if (lane == 31) {
    warp_rows[warp] = rows_in_warp;
    warp_active[warp] = active_in_warp;
    warp_chunks[warp] = chunks_in_warp;
  }
  __syncthreads();
  if (warp == 0) {  // the warps' totals, scanned in place (inclusive)
    warp_rows[lane] = WarpInclusiveSum(warp_rows[lane]);
    warp_active[lane] = WarpInclusiveSum(warp_active[lane]);
    if (chunks) warp_chunks[lane] = WarpInclusiveSum(warp_chunks[lane]);
  }
  __syncthreads();
  const int32_t row = (warp > 0 ? warp_rows[warp - 1] : 0) + rows_in_warp - own_rows;
  const int32_t slot = (warp > 0 ? warp_active[warp - 1] : 0) + active_in_warp - own_active;
  const int32_t chunk =
      chunks ? (warp > 0 ? warp_chunks[warp - 1] : 0) + chunks_in_warp - own_chunks : 0;
  if (expert < p.experts) {
    p.begin[expert] = row;
    fill[expert] = row;
    if (own_active) p.active[slot] = expert;
    if (chunks) {
      p.chunks.begin[expert] = chunk;
      for (int32_t q = chunk; q < chunk + own_chunks; ++q) p.chunks.expert[q] = expert;
    }
  }
  if (expert == kAlignThreads - 1) {  // past every expert: its inclusive sums are the totals
    p.begin[p.experts] = row + own_rows;
    *p.num_active = slot + own_active;
    if (chunks) {
      p.chunks.begin[p.experts] = chunk + own_chunks;
      *p.chunks.count = chunk + own_chunks;
    }
    if (p.active_log != nullptr) {
      *p.active_log = slot + own_active - (p.shared_expert >= 0 && tokens > 0 ? 1 : 0);
    }
    if (p.num_tiles != nullptr) *p.num_tiles = static_cast<int32_t>((row + own_rows) / tile);
  }
  __syncthreads();
  if (p.tile_expert != nullptr) {
    for (int64_t e = threadIdx.x; e < p.experts; e += blockDim.x) {
      for (int64_t t = p.begin[e] / tile; t < p.begin[e + 1] / tile; ++t) {
        p.tile_expert[t] = static_cast<int32_t>(e);
      }
    }
  }
  for (int64_t i = threadIdx.x; i < entries; i += blockDim.x) {
    const int64_t e = expert_of(i);
    if (e >= 0 && e < p.experts) {
      const int32_t r = atomicAdd(&fill[e], 1);
      p.token_of[r] = static_cast<int32_t>(token_at(i));
      p.row_of[i] = r;
    } else {
      p.row_of[i] = -1;
    }
  }
}

}  // namespace

void MoeAlign(const MoeAlignParams& p, cudaStream_t stream) {
  assert(p.experts <= kMaxExperts);
  Launch(MoeAlignKernel, 1, kAlignThreads, 0, stream, p);
}

}  // namespace dsv3::kernels
