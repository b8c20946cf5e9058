// How fast can the small-M FP8 kernel's weight reads go with no arithmetic? For the decode
// linears where kernels/moe_grouped.cu reads well below copy bandwidth (o_proj, the experts'
// down), times on the same grid and the same addresses per lane:
//   gemm       DenseFp8Gemm itself (M = 1),
//   pattern    its loads only (XOR-folded into one word per lane, so none is dropped),
//   pipelined  its loads with the next pair of k-blocks requested before the current one is
//              folded (two pairs in flight per warp),
//   contiguous the same bytes by a grid-stride copy-like read (uint4 per lane, 4 in flight),
// and on a second line the loads at the GEMM's residency (16 warps per SM), alone and with the
// GEMM's f16 conversions of the weights and of an activation fragment.
// If `pattern` is near `gemm`, the access pattern bounds the kernel; if near `contiguous`, the
// arithmetic does. Weights rotate through copies over 200 MB, so every launch reads HBM.
// Built as dsv3-read-pattern-bench with the CUDA backend (tools/CMakeLists.txt).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "kernels/fp8_mma_tile.cuh"
#include "kernels/launch_check.h"
#include "kernels/moe_grouped.cuh"
#include "tools/dsv3-bench/cuda_timing.cuh"

namespace {

using dsv3::bench::CopyGbs;
using dsv3::bench::TimeUs;

// LaunchMmaGemm's grid rule (kernels/moe_grouped.cu): 16-row column tiles, K split while the
// launch has fewer than 4096 warps, at most 16 ways, every warp keeping a pair of k-blocks.
struct Grid {
  int64_t tiles, pairs;
  int ksplit, warps;
  int64_t blocks;
};
Grid GemmGrid(int64_t n, int64_t k_pad) {
  Grid g{(n + 15) / 16, k_pad / 256, 1, 8, 0};
  while (g.ksplit < 16 && g.tiles * g.ksplit < 4096 && 2 * g.ksplit <= g.pairs) g.ksplit *= 2;
  g.warps = std::max(8, g.ksplit);
  g.blocks = (g.tiles + g.warps / g.ksplit - 1) / (g.warps / g.ksplit);
  return g;
}

__device__ __forceinline__ uint4 LoadStreaming(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ void Fold(uint32_t& acc, const uint4& v) { acc ^= v.x ^ v.y ^ v.z ^ v.w; }

// One pair of k-blocks of rows g and g + 8 at this lane's 16-byte columns, as the GEMM loads it.
__device__ __forceinline__ void LoadPair(const uint8_t* wrow, int64_t pr, int64_t row8,
                                         uint4 (&v)[8]) {
#pragma unroll
  for (int b = 0; b < 2; ++b) {
    const uint8_t* w = wrow + (2 * pr + b) * 128;
    v[4 * b] = LoadStreaming(w);
    v[4 * b + 1] = LoadStreaming(w + 64);
    v[4 * b + 2] = LoadStreaming(w + row8);
    v[4 * b + 3] = LoadStreaming(w + row8 + 64);
  }
}

// The loaded weights' f16 conversion as the GEMM does it (kConvert >= 1: both rows, 64 cvt per
// pair) and that of an activation fragment per k-block (kConvert >= 2: 32 more), folded; with
// the GEMM's 8 dependent mmas per k-block on them (3), or the same mmas as two chains of 4 (4).
template <int kConvert>
__device__ __forceinline__ void FoldConverted(uint32_t& acc, const uint4 (&v)[8]) {
#pragma unroll
  for (int b = 0; b < 2; ++b) {
    uint32_t f[16];
    if constexpr (kConvert >= 3) {
      uint32_t wg[16], wg8[16], x[16];
      const uint4 rg[2] = {v[4 * b], v[4 * b + 1]}, rg8[2] = {v[4 * b + 2], v[4 * b + 3]};
      const uint4 rx[2] = {make_uint4(v[4 * b].x ^ 0x3c3c3c3c, v[4 * b].y, 0, 0), v[4 * b + 3]};
      dsv3::kernels::ToF16(wg, rg);
      dsv3::kernels::ToF16(wg8, rg8);
      dsv3::kernels::ToF16(x, rx);
      float d[4] = {}, e[4] = {};
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        float(&into)[4] = kConvert == 4 && s % 2 == 1 ? e : d;
        dsv3::kernels::MmaF16(into, wg[2 * s], wg8[2 * s], wg[2 * s + 1], wg8[2 * s + 1], x[2 * s],
                              x[2 * s + 1]);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) acc ^= __float_as_uint(d[i] + e[i]);
    } else {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint4 raw[2] = {v[4 * b + 2 * r], v[4 * b + 2 * r + 1]};
        dsv3::kernels::ToF16(f, raw);
#pragma unroll
        for (int i = 0; i < 16; ++i) acc ^= f[i];
      }
      if constexpr (kConvert == 2) {
        const uint4 x[2] = {make_uint4(v[4 * b].x ^ acc, v[4 * b].y, v[4 * b].z, v[4 * b].w),
                            v[4 * b + 1]};
        dsv3::kernels::ToF16(f, x);
#pragma unroll
        for (int i = 0; i < 16; ++i) acc += f[i];
      }
    }
  }
}

template <bool kPipelined, int kConvert = 0>
__global__ void PatternRead(const uint8_t* w, int64_t n, int64_t k_pad, int ksplit,
                            uint32_t* sink) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32 / ksplit) + warp / ksplit;
  const int64_t c0 = tile * 16, pairs = k_pad / 256, row8 = 8 * k_pad;
  if (c0 >= n) return;
  const uint8_t* wrow = w + (c0 + g) * k_pad + 16 * t;
  uint32_t acc = 0;
  const int kpart = warp % ksplit;
  if constexpr (kPipelined) {
    uint4 cur[8], next[8];
    int64_t pr = kpart;
    if (pr < pairs) LoadPair(wrow, pr, row8, cur);
    for (; pr < pairs; pr += ksplit) {
      const bool more = pr + ksplit < pairs;
      if (more) LoadPair(wrow, pr + ksplit, row8, next);
#pragma unroll
      for (int i = 0; i < 8; ++i) Fold(acc, cur[i]);
      if (more) {
#pragma unroll
        for (int i = 0; i < 8; ++i) cur[i] = next[i];
      }
    }
  } else {
    for (int64_t pr = kpart; pr < pairs; pr += ksplit) {
      uint4 v[8];
      LoadPair(wrow, pr, row8, v);
      if constexpr (kConvert > 0) {
        FoldConverted<kConvert>(acc, v);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) Fold(acc, v[i]);
      }
    }
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;  // never in practice; keeps the loads
}

__global__ void ContiguousRead(const uint8_t* w, int64_t bytes, uint32_t* sink) {
  const int64_t lanes = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vecs = bytes / 16;
  uint32_t acc = 0;
  for (int64_t i = i0; i < vecs; i += 4 * lanes) {
    uint4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (i + j * lanes < vecs) v[j] = LoadStreaming(w + 16 * (i + j * lanes));
      else v[j] = make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) Fold(acc, v[j]);
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

void Run(const char* name, int64_t n, int64_t k, double copy_gbs, uint32_t* sink, int sms) {
  const int64_t bytes = n * k, copies = (int64_t{200} << 20) / bytes + 1;
  uint8_t* w;
  float* s;
  uint8_t* xq;
  float *xs, *y;
  DSV3_CUDA_CHECK(cudaMalloc(&w, copies * bytes));
  DSV3_CUDA_CHECK(cudaMemset(w, 0x11, copies * bytes));  // e4m3 0x11: a small finite value
  DSV3_CUDA_CHECK(cudaMalloc(&s, (n + 127) / 128 * (k / 128) * 4));
  DSV3_CUDA_CHECK(cudaMemset(s, 0, (n + 127) / 128 * (k / 128) * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&xq, 4 * k));
  DSV3_CUDA_CHECK(cudaMemset(xq, 0, 4 * k));
  DSV3_CUDA_CHECK(cudaMalloc(&xs, k / 128 * 4 * 4));
  DSV3_CUDA_CHECK(cudaMemset(xs, 0, k / 128 * 4 * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&y, n * 4));
  const Grid g = GemmGrid(n, k);
  const int iters = std::max(20, static_cast<int>(4e9 / bytes));
  auto at = [&](int i) { return w + i % copies * bytes; };
  const double gemm = TimeUs(copies, iters, [&](int i) {
    dsv3::kernels::DenseFp8Gemm({xq, xs, 1, 4, k, {at(i), s}, n, k / 128, y, n, true}, nullptr);
  });
  const double pattern = TimeUs(copies, iters, [&](int i) {
    PatternRead<false><<<g.blocks, g.warps * 32>>>(at(i), n, k, g.ksplit, sink);
  });
  // The GEMM's residency (16 warps per SM at its ~126 registers), forced on the loads by
  // shared memory: one 16-warp or two 8-warp blocks per SM.
  const size_t limit_smem = g.warps == 16 ? 120 << 10 : 80 << 10;
  for (auto kernel : {PatternRead<false, 0>, PatternRead<false, 1>, PatternRead<false, 2>,
                      PatternRead<false, 3>, PatternRead<false, 4>}) {
    DSV3_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(limit_smem)));
  }
  const double resident = TimeUs(copies, iters, [&](int i) {
    PatternRead<false, 0><<<g.blocks, g.warps * 32, limit_smem>>>(at(i), n, k, g.ksplit, sink);
  });
  const double convert_w = TimeUs(copies, iters, [&](int i) {
    PatternRead<false, 1><<<g.blocks, g.warps * 32, limit_smem>>>(at(i), n, k, g.ksplit, sink);
  });
  const double convert_wx = TimeUs(copies, iters, [&](int i) {
    PatternRead<false, 2><<<g.blocks, g.warps * 32, limit_smem>>>(at(i), n, k, g.ksplit, sink);
  });
  const double mma_chain = TimeUs(copies, iters, [&](int i) {
    PatternRead<false, 3><<<g.blocks, g.warps * 32, limit_smem>>>(at(i), n, k, g.ksplit, sink);
  });
  const double mma_two = TimeUs(copies, iters, [&](int i) {
    PatternRead<false, 4><<<g.blocks, g.warps * 32, limit_smem>>>(at(i), n, k, g.ksplit, sink);
  });
  const double pipelined = TimeUs(copies, iters, [&](int i) {
    PatternRead<true><<<g.blocks, g.warps * 32>>>(at(i), n, k, g.ksplit, sink);
  });
  const double contiguous = TimeUs(copies, iters, [&](int i) {
    ContiguousRead<<<sms * 8, 256>>>(at(i), bytes, sink);
  });
  DSV3_CUDA_CHECK(cudaGetLastError());
  auto pct = [&](double us) { return 100.0 * bytes / us * 1e-3 / copy_gbs; };
  std::printf(
      "%-14s %5ld x %5ld (%6.1f MB; grid %ld blocks x %d warps, K split %d): gemm %6.2f us "
      "(%4.1f%%)  pattern %6.2f (%4.1f%%)  pipelined %6.2f (%4.1f%%)  contiguous %6.2f "
      "(%4.1f%%)\n",
      name, n, k, bytes / 1e6, g.blocks, g.warps, g.ksplit, gemm, pct(gemm), pattern, pct(pattern),
      pipelined, pct(pipelined), contiguous, pct(contiguous));
  std::printf(
      "%-14s at the GEMM's residency: loads %6.2f us (%4.1f%%)  + weight cvt %6.2f "
      "(%4.1f%%)  + activation cvt %6.2f (%4.1f%%)  + mma chain %6.2f (%4.1f%%)  as two "
      "chains %6.2f (%4.1f%%)\n",
      name, resident, pct(resident), convert_w, pct(convert_w), convert_wx, pct(convert_wx),
      mma_chain, pct(mma_chain), mma_two, pct(mma_two));
  for (void* p : {static_cast<void*>(w), static_cast<void*>(s), static_cast<void*>(xq),
                  static_cast<void*>(xs), static_cast<void*>(y)}) {
    DSV3_CUDA_CHECK(cudaFree(p));
  }
}

}  // namespace

int main() {
  int device = 0, sms = 0;
  DSV3_CUDA_CHECK(cudaGetDevice(&device));
  DSV3_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  uint32_t* sink;
  DSV3_CUDA_CHECK(cudaMalloc(&sink, 4));
  const double copy_gbs = CopyGbs();
  std::printf("device-to-device copy: %.1f GB/s (read + write); %% below are of it\n", copy_gbs);
  const struct {
    const char* name;
    int64_t n, k;
  } shapes[] = {{"o_proj", 7168, 16384},
                {"dense down", 7168, 18432},
                {"q_b", 24576, 1536},
                {"dense gate|up", 36864, 7168},
                // The experts at batch 1 as one matrix of their rows (the grouped launch's grid
                // differs in its rows of blocks, not in each warp's loads).
                {"8 x down", 8 * 7168, 2048},
                {"8 x gate|up", 8 * 4096, 7168}};
  for (const auto& shape : shapes) Run(shape.name, shape.n, shape.k, copy_gbs, sink, sms);
  DSV3_CUDA_CHECK(cudaFree(sink));
  return 0;
}
