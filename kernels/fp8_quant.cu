#include <cassert>

#include "kernels/device_utils.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/fp8_quant_warp.cuh"
#include "kernels/launch.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kWarps = 8;  // warps per block of the quantization and gather kernels

// Of `rows`, those in use: below used_count[0] * used_unit when the count is set.
__device__ __forceinline__ int64_t RowsInUse(int64_t rows, const int32_t* used_count,
                                             int64_t used_unit) {
  return used_count != nullptr ? min(rows, *used_count * used_unit) : rows;
}

// The rows of x the quantization reads.
__device__ __forceinline__ int64_t RowsToRead(const QuantizeActivationsParams& p) {
  return RowsInUse(p.rows, p.used_count, p.used_unit);
}

// The rows of q and scales it writes: the padding rows too, unless a device count of rows in
// use is set; then no row past it: the tiled grouped GEMM reads no further, and the unused
// capacity (one partial tile per expert) would cost as much as real rows.
__device__ __forceinline__ int64_t RowsToWrite(const QuantizeActivationsParams& p) {
  return p.used_count != nullptr ? RowsToRead(p) : p.rows_padded;
}

// One warp per (row, 128-column block) (QuantizeRowBlockByWarp). kVector: rows and columns
// allow 8-byte loads of a lane's 4 values.
template <bool kVector>
__global__ void QuantizeWarpPerBlockKernel(QuantizeActivationsParams p) {
  KernelPrologue();
  const int64_t row = static_cast<int64_t>(blockIdx.y) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= RowsToWrite(p)) return;
  const bool real = row < RowsToRead(p);
  const int64_t src_row = real && p.x_rows != nullptr ? p.x_rows[row] : row;
  QuantizeRowBlockByWarp<kVector>(p, row, src_row, real, blockIdx.x);
}

// One warp per (row, run of 2 * kIters 128-column blocks): each iteration a half-warp per block,
// 8 columns per lane, and every iteration's loads issued before the first block's reduction, so
// that a warp keeps up to kIters x 512 bytes of each input in flight (at prefill sizes one
// 8-byte load per lane and block left the copy engine idle: docs/perf/h200.md). kVector: rows
// and columns allow 16-byte loads of a lane's 8 values. Its SiLU-gate and the divisions keep the
// issue slots busier than the loads: 4 blocks of 8 warps per SM (64 registers) rather than the 3
// that 69 registers left room for. ptxas spills 20 bytes inside the IEEE division's slow path
// only (denormal or out-of-range operands).
template <bool kVector, int kIters>
__global__ void __launch_bounds__(kWarps * 32, 4)
    QuantizeRunKernel(QuantizeActivationsParams p, int64_t runs_per_row) {
  KernelPrologue();
  const int lane = threadIdx.x % 32, half = lane / 16, l16 = lane % 16;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t row = unit / runs_per_row;
  if (row >= RowsToWrite(p)) return;
  const int64_t blocks = p.cols_padded / 128;
  const int64_t kb0 = unit % runs_per_row * (2 * kIters) + half;
  const bool real = row < RowsToRead(p);
  const int64_t src_row = real && p.x_rows != nullptr ? p.x_rows[row] : row;
  const bf16* x = static_cast<const bf16*>(p.x) + src_row * p.x_stride;
  const bf16* up = static_cast<const bf16*>(p.up) + src_row * p.up_stride;
  // Whole 16-byte loads first (kVector, 8 columns inside the row), then the ragged edge and
  // unaligned rows one element at a time.
  uint4 raw_x[kIters], raw_up[kIters];
  bool whole[kIters];
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int64_t c0 = (kb0 + 2 * it) * 128 + l16 * 8;
    whole[it] = kVector && real && c0 + 8 <= p.cols;
    if (whole[it]) {
      raw_x[it] = *reinterpret_cast<const uint4*>(x + c0);
      if (p.up != nullptr) raw_up[it] = *reinterpret_cast<const uint4*>(up + c0);
    }
  }
  float v[kIters][8];
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int64_t c0 = (kb0 + 2 * it) * 128 + l16 * 8;
    float u[8];
    if (whole[it]) {
      Bf16x8ToFloats(raw_x[it], v[it]);
      if (p.up != nullptr) Bf16x8ToFloats(raw_up[it], u);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const bool in = real && c0 + j < p.cols;
        v[it][j] = in ? ToFloat(x[c0 + j]) : 0.0f;
        u[j] = in && p.up != nullptr ? ToFloat(up[c0 + j]) : 0.0f;
      }
    }
    if (p.up != nullptr) {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[it][j] = SiluMulBf16(v[it][j], u[j]);
    }
  }
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int64_t kb = kb0 + 2 * it;
    QuantizeBlock128<16>(v[it], real, p.ue8m0, p.q + row * p.cols_padded + kb * 128,
                         p.scales + kb * p.rows_padded + row, kb < blocks);
  }
}

// A warp per row: its codes in 16-byte pieces, every piece's load issued before the first store
// (kGatherPieces per lane cover 7168 columns in one pass), then the row's block scales.
constexpr int kGatherPieces = 14;
__global__ void GatherQuantizedRowsKernel(GatherQuantizedRowsParams p) {
  KernelPrologue();
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= RowsInUse(p.rows, p.used_count, p.used_unit)) return;
  const int64_t src = p.src_rows[row];
  const uint4* from = reinterpret_cast<const uint4*>(p.src_q + src * p.cols_padded);
  uint4* to = reinterpret_cast<uint4*>(p.q + row * p.cols_padded);
  const int64_t pieces = p.cols_padded / 16;
  for (int64_t base = 0; base < pieces; base += 32 * kGatherPieces) {
    uint4 v[kGatherPieces];
#pragma unroll
    for (int i = 0; i < kGatherPieces; ++i) {
      const int64_t c = base + i * 32 + lane;
      if (c < pieces) v[i] = from[c];
    }
#pragma unroll
    for (int i = 0; i < kGatherPieces; ++i) {
      const int64_t c = base + i * 32 + lane;
      if (c < pieces) to[c] = v[i];
    }
  }
  for (int64_t kb = lane; kb < p.cols_padded / 128; kb += 32) {
    p.scales[kb * p.rows_padded + row] = p.src_scales[kb * p.src_rows_padded + src];
  }
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
  // Decode-sized launches: a warp per 128-column block (the run kernel below made the decode
  // layers slower at batches 1 and 128). From kRunRows rows on, runs of 8 blocks per warp with
  // 16-byte loads (prefill: docs/perf/h200.md).
  constexpr int64_t kRunRows = 512;
  if (p.rows_padded < kRunRows) {
    const dim3 grid(static_cast<unsigned>(p.cols_padded / 128), CeilDiv(p.rows_padded, kWarps));
    if (QuantizeLoadsFit(p, 8)) {
      Launch(QuantizeWarpPerBlockKernel<true>, grid, kWarps * 32, 0, stream, p);
    } else {
      Launch(QuantizeWarpPerBlockKernel<false>, grid, kWarps * 32, 0, stream, p);
    }
    return;
  }
  constexpr int kIters = 4;
  const int64_t runs_per_row = CeilDiv(p.cols_padded / 128, int64_t{2} * kIters);
  const auto grid =
      static_cast<unsigned>(CeilDiv(p.rows_padded * runs_per_row, int64_t{kWarps}));
  if (QuantizeLoadsFit(p, 16)) {
    Launch(QuantizeRunKernel<true, kIters>, grid, kWarps * 32, 0, stream, p, runs_per_row);
  } else {
    Launch(QuantizeRunKernel<false, kIters>, grid, kWarps * 32, 0, stream, p, runs_per_row);
  }
}

void GatherQuantizedRows(const GatherQuantizedRowsParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  assert(p.cols_padded % 128 == 0);
  Launch(GatherQuantizedRowsKernel, static_cast<unsigned>(CeilDiv(p.rows, int64_t{kWarps})),
         kWarps * 32, 0, stream, p);
}

void DequantizeFp8(const DequantizeParams& p, cudaStream_t stream) {
  if (p.n == 0 || p.k == 0) return;
  // Rows on x (up to 2^31), columns on y (K is at most a few thousand).
  const dim3 grid(static_cast<unsigned>(p.n), CeilDiv(p.k, 256));
  Launch(DequantizeKernel, grid, 256, 0, stream, p);
}

}  // namespace dsv3::kernels
