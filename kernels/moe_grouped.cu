#include "kernels/device_utils.cuh"
#include "kernels/launch_check.h"
#include "kernels/moe_grouped.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kMaxExperts = 1024;

// One block: counts per expert, a serial prefix over the experts, then placement by atomics.
__global__ void MoeAlignKernel(MoeAlignParams p) {
  __shared__ int32_t count[kMaxExperts];
  __shared__ int32_t fill[kMaxExperts];
  __shared__ int32_t total;
  for (int64_t e = threadIdx.x; e < p.experts; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < p.entries; i += blockDim.x) {
    const int64_t e = p.ids[i] - p.expert_begin;
    if (e >= 0 && e < p.experts) atomicAdd(&count[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t row = 0, n_active = 0;
    for (int64_t e = 0; e < p.experts; ++e) {
      p.begin[e] = row;
      fill[e] = row;
      if (count[e] > 0) p.active[n_active++] = static_cast<int32_t>(e);
      row += count[e];
    }
    p.begin[p.experts] = row;
    *p.num_active = n_active;
    if (p.active_log != nullptr) *p.active_log = n_active;
    total = row;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < p.entries; i += blockDim.x) {
    const int64_t e = p.ids[i] - p.expert_begin;
    if (e >= 0 && e < p.experts) {
      const int32_t r = atomicAdd(&fill[e], 1);
      p.token_of[r] = static_cast<int32_t>(i / p.top_k);
      p.row_of[i] = r;
    } else {
      p.row_of[i] = -1;
    }
  }
  for (int64_t r = total + threadIdx.x; r < p.entries; r += blockDim.x) p.token_of[r] = 0;
}

// Dot product of 16 e4m3 pairs (two uint4 of packed bytes), in F32.
__device__ __forceinline__ float Dot16(const uint4& a, const uint4& b) {
  const uint32_t* pa = reinterpret_cast<const uint32_t*>(&a);
  const uint32_t* pb = reinterpret_cast<const uint32_t*>(&b);
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __nv_fp8x2_storage_t sa = static_cast<__nv_fp8x2_storage_t>(pa[i] >> (16 * h));
      const __nv_fp8x2_storage_t sb = static_cast<__nv_fp8x2_storage_t>(pb[i] >> (16 * h));
      const float2 fa = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(sa, __NV_E4M3)));
      const float2 fb = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(sb, __NV_E4M3)));
      acc = fmaf(fa.x, fb.x, acc);
      acc = fmaf(fa.y, fb.y, acc);
    }
  }
  return acc;
}

constexpr int kWarps = 8;
constexpr int kColsPerWarp = 2;
constexpr int kColsPerBlock = kWarps * kColsPerWarp;
constexpr int kRowTile = 4;

// Block (column tile, active expert slot); each warp computes kColsPerWarp output columns for
// the expert's rows, kRowTile rows at a time, each lane over 16 consecutive K values per step
// (one 128-block per 8 lanes).
__global__ void __launch_bounds__(kWarps * 32) GroupedFp8GemmKernel(GroupedFp8GemmParams p) {
  if (blockIdx.y >= *p.num_active) return;
  const int32_t e = p.active[blockIdx.y];
  const int32_t r_begin = p.begin[e], r_end = p.begin[e + 1];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int cw = 0; cw < kColsPerWarp; ++cw) {
    const int64_t col = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kColsPerWarp + cw;
    if (col >= p.mats * p.n) return;
    const int64_t m = col / p.n, c = col % p.n;
    const GroupedWeight gw = p.weights[e * p.weights_stride + p.first + m];
    const uint8_t* wrow = gw.w + c * p.k_pad;
    const float* srow = gw.s + (c / 128) * p.scale_stride;
    for (int32_t r0 = r_begin; r0 < r_end; r0 += kRowTile) {
      const int rows = min(kRowTile, r_end - r0);
      float acc[kRowTile] = {};
#pragma unroll 2
      for (int64_t k0 = lane * 16; k0 < p.k_pad; k0 += 32 * 16) {
        const uint4 w = __ldg(reinterpret_cast<const uint4*>(wrow + k0));
        const int64_t kb = k0 / 128;
        const float ws = __ldg(srow + kb);
#pragma unroll
        for (int r = 0; r < kRowTile; ++r) {
          if (r < rows) {
            const uint4 x = __ldg(reinterpret_cast<const uint4*>(p.xq + (r0 + r) * p.k_pad + k0));
            acc[r] = fmaf(Dot16(x, w), ws * p.xs[kb * p.rows_padded + r0 + r], acc[r]);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kRowTile; ++r) {
        const float v = WarpSum(acc[r]);
        if (lane == 0 && r < rows) {
          static_cast<bf16*>(p.y)[(r0 + r) * p.y_stride + col] = FromFloat<bf16>(v);
        }
      }
    }
  }
}

}  // namespace

void MoeAlign(const MoeAlignParams& p, cudaStream_t stream) {
  MoeAlignKernel<<<1, 1024, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

void GroupedFp8Gemm(const GroupedFp8GemmParams& p, cudaStream_t stream) {
  if (p.max_active == 0) return;
  const dim3 grid(CeilDiv(p.mats * p.n, kColsPerBlock), static_cast<unsigned>(p.max_active));
  GroupedFp8GemmKernel<<<grid, kWarps * 32, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv3::kernels
