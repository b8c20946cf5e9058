// FP8 (e4m3) conversions for the block-scaled GEMMs of SPEC section 4.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv3::kernels {

// Per token per 128 channels: s = max(amax, 1e-4) / 448 (ue8m0: rounded up to a power of two),
// q = x / s as e4m3. x [rows, cols] BF16 -> q [rows_padded, cols_padded] e4m3 (row stride
// cols_padded) and scales [cols_padded / 128, rows_padded] F32, M-contiguous as cuBLASLt's
// VEC128_32F mode wants. Padding rows and columns get q = 0 and scale 1.
struct QuantizeActivationsParams {
  const void* x;
  int64_t x_stride;
  int64_t rows, cols;
  int64_t rows_padded, cols_padded;  // cols_padded a multiple of 128
  uint8_t* q;
  float* scales;
  bool ue8m0;
};
void QuantizeActivations(const QuantizeActivationsParams& p, cudaStream_t stream);

// out[n, k] = w[n, k] * scale_inv[n / 128][k / 128] as BF16. w [n, k] e4m3 with row stride
// w_stride; scale_inv row stride scale_stride; out row stride out_stride.
struct DequantizeParams {
  const uint8_t* w;
  int64_t w_stride;
  const float* scale_inv;
  int64_t scale_stride;
  int64_t n, k;
  void* out;
  int64_t out_stride;
};
void DequantizeFp8(const DequantizeParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
