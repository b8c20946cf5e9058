// One warp's share of QuantizeActivations (kernels/fp8_quant.cuh): a row's 128-column block. A
// header of its own so that kernels which find the source row themselves (MoeAlignQuantize)
// give the quantization kernel's bits.
#pragma once

#include <cstdint>

#include "kernels/device_utils.cuh"
#include "kernels/fp8_quant.cuh"

namespace dsv3::kernels {

// Output row `row`, block kb of q and scales, from row src_row of x (and up, with the SiLU-gate)
// when `real`; a padding row (q = 0, scale 1) otherwise. Each lane owns 4 consecutive columns;
// every lane of the warp calls it. kVector: x's (and up's) rows allow 8-byte loads.
template <bool kVector>
__device__ __forceinline__ void QuantizeRowBlockByWarp(const QuantizeActivationsParams& p,
                                                       int64_t row, int64_t src_row, bool real,
                                                       int64_t kb) {
  const int lane = threadIdx.x % 32;
  const int64_t c0 = kb * 128 + lane * 4;
  float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (real) {
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
      for (int j = 0; j < 4; ++j) v[j] = SiluMulBf16(v[j], u[j]);
    }
  }
  QuantizeBlock128(v, real, p.ue8m0, p.q + row * p.cols_padded + kb * 128,
                   p.scales + kb * p.rows_padded + row);
}

}  // namespace dsv3::kernels
