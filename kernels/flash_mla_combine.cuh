// The flash decode kernel's partial outputs (kernels/flash_mla_decode.cu: the pieces of the
// items its cut splits, kernels/flash_mla_cut.h) and their merge, shared by its combine kernel
// and by the W_UV kernel (kernels/mla_absorb.cu), which merges them itself in one-token steps
// instead of waiting for a combine kernel: one function, so the same bits.
#pragma once

#include <cstdint>

#include "kernels/device_utils.cuh"
#include "kernels/flash_mla_decode.cuh"

namespace dsv3::kernels {

// The merge's block: 128 threads, thread i merging dims [4i, 4i + 4).
constexpr int kFlashCombineThreads = kFlashDecodeLora / 4;

// The launch's cut as its items give it (the last item's tiles end where the cut does).
__device__ __forceinline__ FlashCut CutOf(const MlaGemmItem* items, int num_items, int parts) {
  const MlaGemmItem last = items[num_items - 1];
  return MakeFlashCut(FlashTileEnd(last), parts);
}
// FlashSplitPartials' arrays: o of (slot, head h), and its lse.
__device__ __forceinline__ float* SlotO(const FlashSplitPartials& p, int slot, int h) {
  return p.base + (static_cast<int64_t>(slot) * p.heads + h) * kFlashDecodeLora;
}
__device__ __forceinline__ float* SlotLse(const FlashSplitPartials& p, int slot, int h) {
  return p.base + int64_t{2} * p.parts * p.heads * kFlashDecodeLora +
         static_cast<int64_t>(slot) * p.heads + h;
}
// Item i's pieces.
__device__ __forceinline__ FlashItemPieces PiecesOfItem(const FlashSplitPartials& p, int item) {
  const MlaGemmItem it = p.items[item];
  return PiecesOfItem(CutOf(p.items, p.num_items, p.parts), it.tile_begin, FlashTileEnd(it));
}

// The slots of item i's pieces into shared `slot` [kFlashDecodeMaxParts], each thread of the
// kFlashCombineThreads-thread block those of pieces threadIdx.x, + kFlashCombineThreads, ...
// (the ones MergeSplits reads back itself: no barrier between); returns the count. From the
// items alone, so callers run it before their programmatic wait.
__device__ __forceinline__ int PlanMerge(const FlashSplitPartials& p, int item, int* slot) {
  const FlashItemPieces pieces = PiecesOfItem(p, item);
  for (int s = threadIdx.x; s < pieces.Count(); s += kFlashCombineThreads) {
    slot[s] = pieces.Slot(s);
  }
  return pieces.Count();
}

// out = sum_s w_s o_s / sum_s w_s at this thread's 4 dims of head h over an item's `pieces`
// pieces (slots from PlanMerge), w_s = 2^(lse_s - max lse). Every thread of the block calls it
// (block-wide barriers). weight: shared [kFlashDecodeMaxParts], warp_value: shared [4]. The
// weights are found by all threads together and each thread's loads over the pieces are
// independent, so the block waits about one memory latency per 16 pieces rather than two per
// piece (a one-token step at 65536 keys has 64 pieces per head).
__device__ __forceinline__ void MergeSplits(const FlashSplitPartials& p, int pieces,
                                            const int* slot, int h, float* weight,
                                            float* warp_value, float (&out)[4]) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < pieces; s += kFlashCombineThreads) {
    weight[s] = *SlotLse(p, slot[s], h);
    mx = fmaxf(mx, weight[s]);
  }
  mx = WarpMax(mx);
  if (lane == 0) warp_value[warp] = mx;
  __syncthreads();
  mx = fmaxf(fmaxf(warp_value[0], warp_value[1]), fmaxf(warp_value[2], warp_value[3]));
  // Every thread wrote its own weight slots above and rewrites only those here.
  for (int s = threadIdx.x; s < pieces; s += kFlashCombineThreads) {
    weight[s] = exp2f(weight[s] - mx);
  }
  __syncthreads();
  float acc[4] = {}, total = 0.0f;
  const int d = 4 * threadIdx.x;
  // A batch's loads all go out before its first product; the sum stays in piece order.
  constexpr int kBatch = 16;
  for (int s0 = 0; s0 < pieces; s0 += kBatch) {
    float4 v[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      if (s0 + j < pieces) v[j] = *reinterpret_cast<const float4*>(SlotO(p, slot[s0 + j], h) + d);
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      if (s0 + j >= pieces) break;
      const float w = weight[s0 + j];
      total += w;
      acc[0] = fmaf(w, v[j].x, acc[0]);
      acc[1] = fmaf(w, v[j].y, acc[1]);
      acc[2] = fmaf(w, v[j].z, acc[2]);
      acc[3] = fmaf(w, v[j].w, acc[3]);
    }
  }
  const float inv = 1.0f / total;
#pragma unroll
  for (int i = 0; i < 4; ++i) out[i] = acc[i] * inv;
}

}  // namespace dsv3::kernels
