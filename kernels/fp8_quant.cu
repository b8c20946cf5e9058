#include "kernels/device_utils.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/launch.cuh"

namespace dsv3::kernels {

namespace {

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
      Load4<true>(x, c0, p.cols, ElemType::kBF16, v);
      if (p.up != nullptr) Load4<true>(up, c0, p.cols, ElemType::kBF16, u);
    } else {
      Load4<false>(x, c0, p.cols, ElemType::kBF16, v);
      if (p.up != nullptr) Load4<false>(up, c0, p.cols, ElemType::kBF16, u);
    }
    if (p.up != nullptr) {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = ToFloat(FromFloat<bf16>(SiluMul(v[j], u[j])));
    }
  }
  QuantizeBlock128(v, row < rows, p.ue8m0, p.q + row * p.cols_padded + kb * 128,
                   p.scales + kb * p.rows_padded + row);
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
