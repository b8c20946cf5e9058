// The split outputs of the flash decode kernel (FlashMlaDecodeParams::partial) and their merge,
// shared by the kernels that merge them: its combine kernel (kernels/flash_mla_decode.cu) and
// W_UV's product when it merges as it loads (kernels/mla_absorb.cu). Device code only.
//
// Layout of `partial` for `items` items, `splits` splits and `heads` heads: first the outputs
// o [items][splits][heads][512] F32, each normalized by its own split's sum, then the splits'
// log2-sum-exps lse [items][splits][heads] F32 (-inf for an empty split).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/flash_mla_decode.cuh"

namespace dsv3::kernels {

struct FlashMlaSplitOutputs {
  float* partial;
  int32_t items, splits, heads;

  __device__ __forceinline__ float* O(int item, int split, int h) const {
    return partial +
           ((static_cast<int64_t>(item) * splits + split) * heads + h) * kFlashDecodeLora;
  }
  __device__ __forceinline__ float* Lse(int item, int split, int h) const {
    return partial + static_cast<int64_t>(items) * splits * heads * kFlashDecodeLora +
           (static_cast<int64_t>(item) * splits + split) * heads + h;
  }
};

// A split's weight in the merge: 2^(lse - max lse over the splits); an empty split weighs 0.
__device__ __forceinline__ float SplitWeight(float lse, float max_lse) {
  return lse == -INFINITY ? 0.0f : exp2f(lse - max_lse);
}

// The merge of kWidth consecutive dims (from `dim`) of one (item, head), given every split's
// weight in order: out = sum_s w_s o_s / sum_s w_s, summed split by split (a split of weight 0
// is skipped: its output may never have been written). Every merger of the same values gets
// the same bits.
template <int kWidth>
__device__ __forceinline__ void MergeSplits(const FlashMlaSplitOutputs& s, int item, int h,
                                            int dim, const float* weight, float (&out)[kWidth]) {
  static_assert(kWidth % 4 == 0);
  float acc[kWidth] = {}, total = 0.0f;
  const float* o = s.O(item, 0, h) + dim;
  const int64_t split_stride = static_cast<int64_t>(s.heads) * kFlashDecodeLora;
#pragma unroll 8
  for (int i = 0; i < s.splits; ++i) {
    const float w = weight[i];
    // Loaded before the test, so that the unrolled loop keeps its loads in flight together.
    float4 v[kWidth / 4];
#pragma unroll
    for (int j = 0; j < kWidth / 4; ++j) {
      v[j] = *reinterpret_cast<const float4*>(o + i * split_stride + 4 * j);
    }
    total += w;
    if (w == 0.0f) continue;
#pragma unroll
    for (int j = 0; j < kWidth / 4; ++j) {
      acc[4 * j] = fmaf(w, v[j].x, acc[4 * j]);
      acc[4 * j + 1] = fmaf(w, v[j].y, acc[4 * j + 1]);
      acc[4 * j + 2] = fmaf(w, v[j].z, acc[4 * j + 2]);
      acc[4 * j + 3] = fmaf(w, v[j].w, acc[4 * j + 3]);
    }
  }
  const float inv = 1.0f / total;
#pragma unroll
  for (int j = 0; j < kWidth; ++j) out[j] = acc[j] * inv;
}

}  // namespace dsv3::kernels
