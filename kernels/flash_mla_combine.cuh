// The flash decode kernel's split outputs (kernels/flash_mla_decode.cu) and their merge, shared
// by its combine kernel and by the W_UV kernel (kernels/mla_absorb.cu), which merges them itself
// in one-token steps instead of waiting for a combine kernel: one function, so the same bits.
#pragma once

#include <cstdint>

#include "kernels/device_utils.cuh"
#include "kernels/flash_mla_decode.cuh"

namespace dsv3::kernels {

// The merge's block: 128 threads, thread i merging dims [4i, 4i + 4).
constexpr int kFlashCombineThreads = kFlashDecodeLora / 4;

// FlashSplitPartials' arrays (flash_mla_decode.cuh): o of (item, split, head h), and its lse.
__device__ __forceinline__ float* SplitO(const FlashSplitPartials& p, int item, int split, int h) {
  return p.base +
         ((static_cast<int64_t>(item) * p.splits + split) * p.heads + h) * kFlashDecodeLora;
}
__device__ __forceinline__ float* SplitLse(const FlashSplitPartials& p, int item, int split,
                                           int h) {
  return p.base + static_cast<int64_t>(p.items) * p.splits * p.heads * kFlashDecodeLora +
         (static_cast<int64_t>(item) * p.splits + split) * p.heads + h;
}

// out = sum_s w_s o_s / sum_s w_s at this thread's 4 dims of (item, h), w_s = 2^(lse_s - max
// lse); empty splits weigh nothing. Every thread of the kFlashCombineThreads-thread block calls
// it (block-wide barriers). weight: shared [kFlashDecodeMaxSplits], warp_value: shared [4]. The
// weights are found by all threads together and each thread's loads over the splits are
// independent, so the block waits about one memory latency per 8 splits rather than two per
// split.
__device__ __forceinline__ void MergeSplits(const FlashSplitPartials& p, int item, int h,
                                            float* weight, float* warp_value, float (&out)[4]) {
  const int splits = p.splits, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += kFlashCombineThreads) {
    weight[s] = *SplitLse(p, item, s, h);
    mx = fmaxf(mx, weight[s]);
  }
  mx = WarpMax(mx);
  if (lane == 0) warp_value[warp] = mx;
  __syncthreads();
  mx = fmaxf(fmaxf(warp_value[0], warp_value[1]), fmaxf(warp_value[2], warp_value[3]));
  // Every thread wrote its own weight slots above and rewrites only those here.
  for (int s = threadIdx.x; s < splits; s += kFlashCombineThreads) {
    weight[s] = weight[s] == -INFINITY ? 0.0f : exp2f(weight[s] - mx);
  }
  __syncthreads();
  float acc[4] = {}, total = 0.0f;
  const int d = 4 * threadIdx.x;
  const float* o = SplitO(p, item, 0, h) + d;
  const int64_t split_stride = static_cast<int64_t>(p.heads) * kFlashDecodeLora;
#pragma unroll 8
  for (int s = 0; s < splits; ++s) {
    const float w = weight[s];
    const float4 v = *reinterpret_cast<const float4*>(o + s * split_stride);
    total += w;
    // An empty split's output was never written: skip it rather than multiply it by 0.
    if (w == 0.0f) continue;
    acc[0] = fmaf(w, v.x, acc[0]);
    acc[1] = fmaf(w, v.y, acc[1]);
    acc[2] = fmaf(w, v.z, acc[2]);
    acc[3] = fmaf(w, v.w, acc[3]);
  }
  const float inv = 1.0f / total;
#pragma unroll
  for (int i = 0; i < 4; ++i) out[i] = acc[i] * inv;
}

}  // namespace dsv3::kernels
