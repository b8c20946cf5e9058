// FP8 (e4m3) conversions for the block-scaled GEMMs of SPEC section 4.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv3::kernels {

// Per token per 128 channels: s = max(amax, 1e-4) / 448 (ue8m0: rounded up to a power of two),
// q = x / s as e4m3. x [rows, cols] BF16 -> q [rows_padded, cols_padded] e4m3 (row stride
// cols_padded) and scales [cols_padded / 128, rows_padded] F32, M-contiguous as cuBLASLt's
// VEC128_32F mode wants. Padding rows and columns get q = 0 and scale 1. The gather and the
// SiLU-gate below save the MoE paths a pass over a [rows, cols] BF16 intermediate each.
struct QuantizeActivationsParams {
  const void* x;
  int64_t x_stride;
  int64_t rows, cols;
  int64_t rows_padded, cols_padded;  // cols_padded a multiple of 128
  uint8_t* q;
  float* scales;
  bool ue8m0;
  // Optional gather: row r of the output quantizes row x_rows[r] of x (device, [rows]).
  const int32_t* x_rows = nullptr;
  // Optional SiLU-gate: the value quantized is BF16(silu(x) * up), rounded as kernels::Binary's
  // kSiluMul rounds it (up [rows, cols] BF16 with row stride up_stride, rows as x's).
  const void* up = nullptr;
  int64_t up_stride = 0;
  // Optional device count: only rows below used_count[0] * used_unit are read and written; the
  // rest are left as they were (a layout built on the device, sized for the most rows it could
  // need, whose consumers read no further).
  const int32_t* used_count = nullptr;
  int64_t used_unit = 1;
};
void QuantizeActivations(const QuantizeActivationsParams& p, cudaStream_t stream);

// Whether x (and up, when set) allow loads of `bytes` at once: base and row stride (BF16
// elements). The quantization kernels pick their vector loads by it.
inline bool QuantizeLoadsFit(const QuantizeActivationsParams& p, int bytes) {
  auto fits = [&](const void* base, int64_t stride) {
    return reinterpret_cast<uintptr_t>(base) % bytes == 0 && stride % (bytes / 2) == 0;
  };
  return fits(p.x, p.x_stride) && (p.up == nullptr || fits(p.up, p.up_stride));
}

// Quantized rows gathered: row r of q / scales (as QuantizeActivations writes them: q [rows_padded,
// cols_padded] e4m3, scales [cols_padded / 128, rows_padded]) = row src_rows[r] of src_q /
// src_scales ([.., cols_padded], [cols_padded / 128, src_rows_padded]), for r below rows, or below
// used_count[0] * used_unit when set (the rows past it are not written). The same bits as
// QuantizeActivations with x_rows = src_rows over the unquantized rows; cheaper where rows repeat
// (the prefill experts' routed rows: each token top_k times). cols_padded a multiple of 128.
struct GatherQuantizedRowsParams {
  const uint8_t* src_q;
  const float* src_scales;
  int64_t src_rows_padded;
  const int32_t* src_rows;  // device, [rows]
  int64_t rows, cols_padded;
  uint8_t* q;
  float* scales;
  int64_t rows_padded;
  const int32_t* used_count = nullptr;
  int64_t used_unit = 1;
};
void GatherQuantizedRows(const GatherQuantizedRowsParams& p, cudaStream_t stream);

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
