// FP8 block-scaled grouped GEMM for the MoE prefill path (sm_90a wgmma): every routed row of
// every local expert in one launch, rows grouped expert by expert into whole 64-row tiles. The
// decode-sized path (a few rows per expert) is GroupedFp8Gemm in moe_grouped.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/moe_grouped.cuh"  // GroupedWeight {const uint8_t* w; const float* s;}

namespace dsv3::kernels {

constexpr int64_t kGroupedTileRows = 64;  // an expert's rows occupy whole tiles of this many rows

// Contract (asserted on the host where it can be): k_pad a multiple of 512; rows_padded =
// num_tiles * kGroupedTileRows; xq, xs and every weight's w 16-byte aligned (the weights are
// read by TMA at coordinates derived from w: a misaligned w would read the wrong bytes), every
// s 4-byte aligned, y 4-byte aligned (8 for F32); tile_expert entries in [0, experts). Tiles of
// one expert should be adjacent (they then share weight reads through L2; any order is
// correct). y is written for every row of every tile and columns [m * n, m * n + n) of each
// matrix m, nothing else.
struct Fp8GroupedGemmParams {
  const uint8_t* xq;           // [rows_padded, k_pad] e4m3, row stride k_pad (padding rows: q = 0)
  const float* xs;             // [k_pad / 128, rows_padded] F32 activation scales, M-contiguous
  int64_t rows_padded;         // = num_tiles * kGroupedTileRows
  int64_t k_pad;               // multiple of 512; weights and xq are zero past the real K
  const int32_t* tile_expert;  // [num_tiles] device: local expert of rows [64 i, 64 i + 64)
  int64_t num_tiles;
  const GroupedWeight* weights;  // device table [experts * weights_stride]
  // Matrix m of expert e: weights[e * weights_stride + first + m].
  int64_t weights_stride, first, mats;
  int64_t n, scale_stride;     // columns per matrix; weight scale row stride (in floats)
  void* y;  // [rows_padded, mats * n] BF16, or F32 when y_f32; row stride y_stride
  int64_t y_stride;
  bool y_f32;
  // Optional device count of the tiles in use (a layout built on the device, sized for the most
  // tiles it could need): tiles from it on are neither read nor written.
  const int32_t* tiles_used = nullptr;
  // Optional SwiGLU output (mats = 2: gate then up; y unused): instead of y, the launch writes
  // down's input h = BF16(silu(BF16(gate)) * BF16(up)) quantized 1x128 with QuantizeActivations'
  // bits (SiLU-gate, every row real): codes h_q [rows_padded, h_k_pad] e4m3 and scales h_s
  // [h_k_pad / 128, rows_padded], columns n to h_k_pad (a multiple of 128) as zeros. Saves the
  // BF16 [rows, 2n] intermediate and a pass over it.
  uint8_t* h_q = nullptr;
  float* h_s = nullptr;
  int64_t h_k_pad = 0;
  bool h_ue8m0 = false;
};

// y[r, m * n + c] = sum_kb (sum_{k in kb} xq[r,k] * w_m[c,k]) * xs[kb, r] * s_m[c / 128, kb], F32
// accumulation, every row of every tile written, columns c < n only (or h from gate and up:
// h_q). No host synchronization
// (graph-capturable; the tensor maps travel by value in the launch); a persistent grid of one
// 384-thread block per SM with ~194 KB of dynamic shared memory.
void Fp8GroupedGemm(const Fp8GroupedGemmParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
