#include "kernels/device_utils.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/launch.cuh"

namespace dsv3::kernels {

namespace {

// Four BF16 values from 8 bytes (the caller checked the alignment).
__device__ __forceinline__ void Load4(const bf16* src, float v[4]) {
  const uint2 raw = *reinterpret_cast<const uint2*>(src);
  const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
  const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
  v[0] = __low2float(lo);
  v[1] = __high2float(lo);
  v[2] = __low2float(hi);
  v[3] = __high2float(hi);
}

// One warp per (row, 128-column block): each lane owns 4 consecutive columns. kVector: rows
// and columns allow 8-byte loads of the lane's 4 values.
template <bool kVector>
__global__ void QuantizeKernel(QuantizeActivationsParams p) {
  KernelPrologue();
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * (blockDim.x / 32) + threadIdx.x / 32;
  const int64_t kb = blockIdx.x;
  if (row >= p.rows_padded) return;
  const int64_t c0 = kb * 128 + lane * 4;
  const int64_t rows =
      p.used_count != nullptr ? min(p.rows, *p.used_count * p.used_unit) : p.rows;
  float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (row < rows) {
    const int64_t src_row = p.x_rows != nullptr ? p.x_rows[row] : row;
    const bf16* x = static_cast<const bf16*>(p.x) + src_row * p.x_stride;
    const bf16* up = static_cast<const bf16*>(p.up) + src_row * p.up_stride;
    float u[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // up's values (SiLU-gate only)
    if (kVector && c0 + 4 <= p.cols) {
      Load4(x + c0, v);
      if (p.up != nullptr) Load4(up + c0, u);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (c0 + j >= p.cols) continue;
        v[j] = ToFloat(x[c0 + j]);
        if (p.up != nullptr) u[j] = ToFloat(up[c0 + j]);
      }
    }
    if (p.up != nullptr) {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = ToFloat(FromFloat<bf16>(SiluMul(v[j], u[j])));
    }
  }
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) amax = fmaxf(amax, fabsf(v[j]));
  amax = WarpMax(amax);
  const float s = row < rows ? Fp8BlockScale(amax, p.ue8m0) : 1.0f;
  uint32_t packed = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) packed |= static_cast<uint32_t>(ToE4M3(v[j] / s)) << (8 * j);
  *reinterpret_cast<uint32_t*>(p.q + row * p.cols_padded + c0) = packed;
  if (lane == 0) p.scales[kb * p.rows_padded + row] = s;
}

__global__ void DequantizeKernel(DequantizeParams p) {
  KernelPrologue();
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
  auto aligned = [](const void* base, int64_t stride) {
    return reinterpret_cast<uintptr_t>(base) % 8 == 0 && stride % 4 == 0;
  };
  if (aligned(p.x, p.x_stride) && (p.up == nullptr || aligned(p.up, p.up_stride))) {
    Launch(QuantizeKernel<true>, grid, kWarps * 32, 0, stream, p);
  } else {
    Launch(QuantizeKernel<false>, grid, kWarps * 32, 0, stream, p);
  }
}

void DequantizeFp8(const DequantizeParams& p, cudaStream_t stream) {
  if (p.n == 0 || p.k == 0) return;
  // Rows on x (up to 2^31), columns on y (K is at most a few thousand).
  const dim3 grid(static_cast<unsigned>(p.n), CeilDiv(p.k, 256));
  Launch(DequantizeKernel, grid, 256, 0, stream, p);
}

}  // namespace dsv3::kernels
