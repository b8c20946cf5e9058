// How an FP8 weight's e4m3 codes lie in device memory. Checkpoints store [N, K] row-major, and
// so does the device for every weight cuBLASLt reads. The routed experts' weights, which only
// this project's kernels read (the small-M grouped GEMM at decode sizes, the tiled grouped GEMM
// at prefill sizes), lie k-block-major instead:
//   row-major        byte (r, k) at r K_pad + k: a warp's block of 16 rows x 128 k is 16
//                    lines K_pad bytes apart;
//   k-block-major    byte (r, k) at ((k / 128) N_pad + r) 128 + k % 128, [K_pad / 128][N_pad]
//                    [128]: those 16 rows are one 2 KB run, and a TMA box of 256 rows x 128
//                    bytes one 32 KB run (tools/dsv3-bench/weight_layout_bench.cu times the two
//                    in the small-M kernel's ring).
// N_pad = WeightRowsPadded(N) rows either way (zeros past N), K_pad a multiple of 512.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv3::kernels {

// Rows a weight's storage holds: N rounded up to whole 64-row blocks.
__host__ __device__ constexpr int64_t WeightRowsPadded(int64_t n) { return (n + 63) / 64 * 64; }

// Bytes from one 128-k block of a row to the next (kb) and from a row to the next (row).
struct WeightStrides {
  int32_t kb, row;
};
__host__ __device__ constexpr WeightStrides StridesOf(bool k_block_major, int64_t n,
                                                      int64_t k_pad) {
  return k_block_major ? WeightStrides{static_cast<int32_t>(WeightRowsPadded(n) * 128), 128}
                       : WeightStrides{128, static_cast<int32_t>(k_pad)};
}

// dst = the row-major codes src [WeightRowsPadded(n), k_pad] laid out k-block-major (same size),
// device to device on `stream`.
void ToKBlockMajor(const uint8_t* src, int64_t n, int64_t k_pad, uint8_t* dst,
                   cudaStream_t stream);

}  // namespace dsv3::kernels
