#include "kernels/device_utils.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/launch_check.h"

namespace dsv3::kernels {

namespace {

__device__ __forceinline__ uint8_t ToE4M3(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// One warp per (row, 128-column block): each lane owns 4 consecutive columns.
__global__ void QuantizeKernel(QuantizeActivationsParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * (blockDim.x / 32) + threadIdx.x / 32;
  const int64_t kb = blockIdx.x;
  if (row >= p.rows_padded) return;
  const int64_t c0 = kb * 128 + lane * 4;
  float v[4];
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const bool inside = row < p.rows && c0 + j < p.cols;
    v[j] = inside ? ToFloat(static_cast<const bf16*>(p.x)[row * p.x_stride + c0 + j]) : 0.0f;
    amax = fmaxf(amax, fabsf(v[j]));
  }
  amax = WarpMax(amax);
  float s = fmaxf(amax, 1e-4f) / 448.0f;
  if (p.ue8m0) s = exp2f(ceilf(log2f(s)));
  if (row >= p.rows) s = 1.0f;
  uint32_t packed = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) packed |= static_cast<uint32_t>(ToE4M3(v[j] / s)) << (8 * j);
  *reinterpret_cast<uint32_t*>(p.q + row * p.cols_padded + c0) = packed;
  if (lane == 0) p.scales[kb * p.rows_padded + row] = s;
}

__global__ void DequantizeKernel(DequantizeParams p) {
  const int64_t n = blockIdx.x;
  const uint8_t* w = p.w + n * p.w_stride;
  const float* s = p.scale_inv + (n / 128) * p.scale_stride;
  bf16* out = static_cast<bf16*>(p.out) + n * p.out_stride;
  for (int64_t k = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; k < p.k;
       k += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(w[k], __NV_E4M3);
    out[k] = FromFloat<bf16>(__half2float(__half(h)) * s[k / 128]);
  }
}

}  // namespace

void QuantizeActivations(const QuantizeActivationsParams& p, cudaStream_t stream) {
  if (p.rows_padded == 0) return;
  constexpr int kWarps = 8;
  const dim3 grid(static_cast<unsigned>(p.cols_padded / 128), CeilDiv(p.rows_padded, kWarps));
  QuantizeKernel<<<grid, kWarps * 32, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

void DequantizeFp8(const DequantizeParams& p, cudaStream_t stream) {
  if (p.n == 0 || p.k == 0) return;
  // Rows on x (up to 2^31), columns on y (K is at most a few thousand).
  const dim3 grid(static_cast<unsigned>(p.n), CeilDiv(p.k, 256));
  DequantizeKernel<<<grid, 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv3::kernels
