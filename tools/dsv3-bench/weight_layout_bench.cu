// Does the weights' layout bound the small-M FP8 kernel at one row? The kernel's shared-memory
// ring (kernels/moe_grouped.cu, Feed::kSmemRing) has each warp copy, per 128-k block, 16 rows x
// 128 bytes of a row-major [N, K] weight: 16 lines k_pad bytes apart. Here the same grid and the
// same ring (cp.async, 3 stages a warp, 8- or 16-warp blocks) read the same bytes in other
// layouts (Layout below), by other copies, with the kernel's work or parts of it, against
// DenseFp8Gemm itself (M = 1, row-major) and a grid-stride copy-like read of the same bytes.
// Weights rotate through copies over 200 MB, so every launch reads HBM. Built as
// dsv3-weight-layout-bench (tools/CMakeLists.txt).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "kernels/fp8_mma_tile.cuh"
#include "kernels/launch_check.h"
#include "kernels/moe_grouped.cuh"
#include "kernels/sm90_async.cuh"
#include "tools/dsv3-bench/cuda_timing.cuh"

namespace {

using dsv3::bench::CopyGbs;
using dsv3::bench::TimeUs;
using namespace dsv3::kernels;

constexpr int kStages = 3;                // the kernel's kRingStages
constexpr int kStageBytes = 4 * 32 * 16;  // a warp's k-block: [4 pieces][32 lanes] x 16 bytes
// A stage of the full ring (kFullRing) also holds the token fragment ([2][32 lanes] x 16 bytes)
// and the block's three scales per lane (weight, rows 2t and 2t + 1).
constexpr int kFullStageBytes = kStageBytes + 2 * 32 * 16 + 32 * 16;
constexpr int kMaxWarps = 16;

// How the weight's bytes lie (Layout), how a warp copies a block (kContiguous) and what it does
// with each block (Work):
//   kRowMajor  [N, K], as checkpoints store it;
//   kTileMajor [N / 16][K / 128][16 rows][128 bytes]: a warp's block one 2 KB run, a column
//              tile's k-blocks one after another;
//   kKbMajor   [K / 128][N][128 bytes]: a block one 2 KB run, a k-block's column tiles one after
//              another (a TMA box of 256 rows x 128 bytes is one 32 KB run);
//   kContiguous: lane l copies bytes [512 p + 16 l, + 16) of the block (4 instructions of 512
//              contiguous bytes) to where the lane whose fragment they are reads them back
//              (after a __syncwarp); else each lane copies its own fragment (rows g and g + 8,
//              bytes 16t and 64 + 16t of each: the addresses loads into registers must take);
//   kLoads     folds the weights into a word;
//   kKernel    the kernel's work: the token fragment and the scales loaded per block beside the
//              ring (LoadTokenFragment, __ldg), f16 conversions and mmas, split-K partial sums
//              met in shared memory, one warp storing;
//   kFullRing  kKernel with the token fragment and the scales copied into the ring with the
//              weights;
//   kKernelOneRow kKernel with one row (every lane's token fragment is row 0's), as
//              DenseFp8Gemm at M = 1 loads it.
enum Layout { kRowMajor, kTileMajor, kKbMajor };
enum Work { kLoads, kKernel, kFullRing, kKernelOneRow };

// Byte offset of block (tile, kb) in a blocked layout.
template <int kLayout>
__device__ __forceinline__ int64_t BlockOffset(int64_t tile, int32_t kb, int32_t kblocks,
                                               int64_t tiles) {
  return kLayout == kTileMajor ? (tile * kblocks + kb) * kStageBytes
                               : (int64_t{kb} * tiles + tile) * kStageBytes;
}

struct Operands {
  const uint8_t* w;
  const uint8_t* xq;  // [8 rows][k_pad]
  const float* ws;    // [n / 128][k_pad / 128]
  const float* xs;    // [k_pad / 128][8 rows]
  float* y;           // [n]
  int64_t n;
  int32_t k_pad;
  int ksplit;
  uint32_t* sink;
};

// Block i of this warp (k-block kb) into ring slot i % kStages, one completion group (empty past
// the last block, so that each iteration closes exactly one). A stage's weights are [4 pieces]
// [32 lanes] x 16 bytes, piece p of lane 4g + t: row g + 8 (p / 2), bytes 16t + 64 (p % 2).
template <int kLayout, bool kContiguous, Work kWork>
__device__ __forceinline__ void IssueBlock(const Operands& p, uint8_t* ring, int lane,
                                           int64_t tile, int32_t i, int32_t blocks, int32_t kb) {
  constexpr int kStage = kWork == kFullRing ? kFullStageBytes : kStageBytes;
  if (i < blocks) {
    const int32_t kblocks = p.k_pad / 128;
    const uint32_t stage = SmemAddr(ring + (i % kStages) * kStage);
    const int g = lane / 4, t = lane % 4;
    if constexpr (kContiguous) {
      const uint8_t* block = p.w + BlockOffset<kLayout>(tile, kb, kblocks, p.n / 16);
#pragma unroll
      for (int piece = 0; piece < 4; ++piece) {
        const int off = piece * 512 + lane * 16, r = off / 128, c = off / 16 % 8;
        const int into = (2 * (r / 8) + c / 4) * 32 + 4 * (r % 8) + c % 4;
        CpAsync16(stage + into * 16, block + off);
      }
    } else {
#pragma unroll
      for (int piece = 0; piece < 4; ++piece) {
        const int row = g + 8 * (piece / 2), col = 16 * t + 64 * (piece % 2);
        const uint8_t* src =
            kLayout == kRowMajor
                ? p.w + ((tile * 16 + row) * p.k_pad + kb * 128 + col)
                : p.w + BlockOffset<kLayout>(tile, kb, kblocks, p.n / 16) + row * 128 + col;
        CpAsync16(stage + piece * 512 + lane * 16, src);
      }
    }
    if constexpr (kWork == kFullRing) {
      const uint8_t* px = p.xq + (g * p.k_pad + kb * 128 + 16 * t);  // M = 8 rows here
      const uint32_t slot = stage + lane * 16;
      CpAsync16(slot + 2048, px);
      CpAsync16(slot + 2560, px + 64);
      const uint32_t scales = slot + 3072;
      CpAsync4(scales, p.ws + (tile * 16 / 128) * kblocks + kb);
      CpAsync4(scales + 4, p.xs + kb * 8 + 2 * t);
      CpAsync4(scales + 8, p.xs + kb * 8 + 2 * t + 1);
    }
  }
  CpAsyncCommit();
}

// One column tile of 16 rows per ksplit warps, warp kpart over k-block pairs kpart, kpart +
// ksplit, ... as the kernel takes them.
template <int kLayout, bool kContiguous, Work kWork>
__global__ void __launch_bounds__(kMaxWarps * 32) RingRead(Operands p) {
  extern __shared__ __align__(16) uint8_t ring_smem[];
  __shared__ float partial[kMaxWarps][4][32];
  constexpr int kStage = kWork == kFullRing ? kFullStageBytes : kStageBytes;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t tile = int64_t{blockIdx.x} * (blockDim.x / 32 / p.ksplit) + warp / p.ksplit;
  const bool has_tile = tile * 16 < p.n;
  const int kpart = warp % p.ksplit;
  const int32_t pairs = p.k_pad / 256, kblocks = p.k_pad / 128;
  const int32_t blocks = has_tile ? 2 * ((pairs - kpart + p.ksplit - 1) / p.ksplit) : 0;
  auto kb_of = [&](int32_t i) { return 2 * (kpart + i / 2 * p.ksplit) + i % 2; };
  uint8_t* ring = ring_smem + warp * kStages * kStage;
  for (int32_t i = 0; i < kStages - 1; ++i) {
    IssueBlock<kLayout, kContiguous, kWork>(p, ring, lane, tile, i, blocks, kb_of(i));
  }
  uint32_t fold = 0;
  float acc[4] = {};
  const float* srow = p.ws + (tile * 16 / 128) * kblocks;
  for (int32_t i = 0; i < blocks; ++i) {
    const int32_t kb = kb_of(i);
    IssueBlock<kLayout, kContiguous, kWork>(p, ring, lane, tile, i + kStages - 1, blocks,
                                            kb_of(i + kStages - 1));
    uint4 x_raw[2];
    float ws = 1.f, xsa = 1.f, xsb = 1.f;
    if constexpr (kWork == kKernel || kWork == kKernelOneRow) {
      const int32_t rows = kWork == kKernelOneRow ? 1 : 8;
      LoadTokenFragment(p.xq, p.xs, p.k_pad, 8, 0, rows, kb, g, t, x_raw, xsa, xsb);
      ws = __ldg(srow + kb);
    }
    CpAsyncWait<kStages - 1>();
    if constexpr (kContiguous) __syncwarp();  // the block's bytes came by other lanes' copies
    const uint4* slot = reinterpret_cast<const uint4*>(ring + (i % kStages) * kStage) + lane;
    const uint4 g_raw[2] = {slot[0], slot[32]}, g8_raw[2] = {slot[64], slot[96]};
    if constexpr (kWork == kLoads) {
      fold ^= g_raw[0].x ^ g_raw[0].w ^ g_raw[1].y ^ g8_raw[0].z ^ g8_raw[1].x;
      continue;
    }
    if constexpr (kWork == kFullRing) {
      x_raw[0] = slot[128];
      x_raw[1] = slot[160];
      const float* sc = reinterpret_cast<const float*>(slot + 192);
      ws = sc[0];
      xsa = sc[1];
      xsb = sc[2];
    }
    uint32_t wg[16], wg8[16];
    ToF16(wg, g_raw);
    ToF16(wg8, g8_raw);
    AccumulateBlock(acc, wg, wg8, x_raw, ws, xsa, xsb);
  }
  if constexpr (kWork != kLoads) {
    if (p.ksplit > 1) {
      if (kpart != 0) {
        for (int i = 0; i < 4; ++i) partial[warp][i][lane] = acc[i];
      }
      __syncthreads();
      if (kpart == 0) {
        for (int q = 1; q < p.ksplit; ++q) {
          for (int i = 0; i < 4; ++i) acc[i] += partial[warp + q][i][lane];
        }
      }
    }
    if (kpart == 0 && has_tile && t == 0) {
      p.y[tile * 16 + g] = acc[0];
      p.y[tile * 16 + g + 8] = acc[2];
    }
  } else {
    for (float a : acc) fold ^= __float_as_uint(a);
    if (fold == 0x9e3779b9u) p.sink[0] = fold;  // never in practice; keeps the loads
  }
}

__global__ void ContiguousRead(const uint8_t* w, int64_t bytes, uint32_t* sink) {
  const int64_t lanes = int64_t{gridDim.x} * blockDim.x;
  const int64_t i0 = int64_t{blockIdx.x} * blockDim.x + threadIdx.x, vecs = bytes / 16;
  uint32_t acc = 0;
  for (int64_t i = i0; i < vecs; i += 4 * lanes) {
    uint4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t at = i + j * lanes;
      v[j] = at < vecs ? LoadStreaming(w + 16 * at) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

// LaunchMmaGemm's split rule for a ring launch (kernels/moe_grouped.cu): K split while the launch
// has fewer than 4096 warps and every warp keeps a pair; a launch spilling past one wave steps
// back to a smaller split filling at least 0.7 of one, or splits once more where that fills its
// waves better. Blocks per SM from the variant's own occupancy (its ring's bytes).
struct Grid {
  int ksplit, warps;
  int64_t blocks;
  size_t smem;
};
template <int kLayout, bool kContiguous, Work kWork>
Grid RingGrid(int64_t n, int64_t k_pad, int sms) {
  const auto kernel = RingRead<kLayout, kContiguous, kWork>;
  const int stage = kWork == kFullRing ? kFullStageBytes : kStageBytes;
  DSV3_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       kMaxWarps * kStages * stage));
  const int64_t tiles = (n + 15) / 16, pairs = k_pad / 256;
  auto warps = [](int s) { return std::max(8, s); };
  auto blocks = [&](int s) { return (tiles + warps(s) / s - 1) / (warps(s) / s); };
  auto smem = [&](int s) { return size_t{kStages} * stage * warps(s); };
  auto waves = [&](int s) {
    int per_sm = 0;
    DSV3_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, warps(s) * 32, smem(s)));
    return static_cast<double>(blocks(s)) / (sms * std::max(per_sm, 1));
  };
  auto fill = [](double w) { return w / std::ceil(w); };
  auto may_split = [&](int s) { return 2 * s <= std::min<int64_t>(pairs, kMaxWarps); };
  int s = 1;
  while (tiles * s < 4096 && may_split(s)) s *= 2;
  const double spilled = waves(s);
  if (spilled > 1) {
    int chosen = s;
    for (int fewer = s / 2; fewer >= 1; fewer /= 2) {
      const double w = waves(fewer);
      if (w > 1) continue;
      if (w >= 0.7) chosen = fewer;
      break;
    }
    if (chosen == s && may_split(s) && fill(spilled) < 0.8 && fill(waves(2 * s)) > fill(spilled)) {
      chosen = 2 * s;
    }
    s = chosen;
  }
  return {s, warps(s), blocks(s), smem(s)};
}

struct Timing {
  double us;
  Grid grid;
};

// One variant over the weight's copies (`copies` of `bytes` from w, taken in turn).
template <int kLayout, bool kContiguous, Work kWork>
Timing TimeRing(Operands p, int64_t copies, int64_t bytes, int iters, int sms) {
  const Grid g = RingGrid<kLayout, kContiguous, kWork>(p.n, p.k_pad, sms);
  const uint8_t* w = p.w;
  p.ksplit = g.ksplit;
  const double us = TimeUs(copies, iters, [&](int i) {
    p.w = w + i % copies * bytes;
    RingRead<kLayout, kContiguous, kWork><<<g.blocks, g.warps * 32, g.smem>>>(p);
  });
  return {us, g};
}

void Run(const char* name, int64_t n, int64_t k, double copy_gbs, uint32_t* sink, int sms) {
  const int64_t bytes = n * k, copies = (int64_t{200} << 20) / bytes + 1;
  uint8_t *w, *xq;
  float *s, *xs, *y;
  DSV3_CUDA_CHECK(cudaMalloc(&w, copies * bytes));
  DSV3_CUDA_CHECK(cudaMemset(w, 0x11, copies * bytes));  // e4m3 0x11: a small finite value
  DSV3_CUDA_CHECK(cudaMalloc(&s, (n + 127) / 128 * (k / 128) * 4));
  DSV3_CUDA_CHECK(cudaMemset(s, 0, (n + 127) / 128 * (k / 128) * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&xq, 8 * k));
  DSV3_CUDA_CHECK(cudaMemset(xq, 0, 8 * k));
  DSV3_CUDA_CHECK(cudaMalloc(&xs, k / 128 * 8 * 4));
  DSV3_CUDA_CHECK(cudaMemset(xs, 0, k / 128 * 8 * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&y, n * 4));
  const int iters = std::max(20, static_cast<int>(4e9 / bytes));
  auto at = [&](int i) { return w + i % copies * bytes; };
  const Operands p{w, xq, s, xs, y, n, static_cast<int32_t>(k), 0, sink};
  const double gemm = TimeUs(copies, iters, [&](int i) {
    DenseFp8Gemm({xq, xs, 1, 8, k, {at(i), s}, n, k / 128, y, n, true}, nullptr);
  });
  const Timing t[] = {TimeRing<kRowMajor, false, kKernelOneRow>(p, copies, bytes, iters, sms),
                      TimeRing<kRowMajor, false, kKernel>(p, copies, bytes, iters, sms),
                      TimeRing<kRowMajor, false, kFullRing>(p, copies, bytes, iters, sms),
                      TimeRing<kTileMajor, true, kKernel>(p, copies, bytes, iters, sms),
                      TimeRing<kTileMajor, true, kFullRing>(p, copies, bytes, iters, sms),
                      TimeRing<kKbMajor, false, kKernel>(p, copies, bytes, iters, sms),
                      TimeRing<kKbMajor, true, kLoads>(p, copies, bytes, iters, sms),
                      TimeRing<kKbMajor, true, kKernel>(p, copies, bytes, iters, sms),
                      TimeRing<kKbMajor, true, kFullRing>(p, copies, bytes, iters, sms)};
  // DenseFp8Gemm with the K split forced to the emulation's: where it matches the default, the
  // two launches have the same grid.
  const double gemm_split = TimeUs(copies, iters, [&](int i) {
    DenseFp8Gemm({xq, xs, 1, 8, k, {at(i), s}, n, k / 128, y, n, true, t[1].grid.ksplit},
                 nullptr);
  });
  const double contiguous = TimeUs(copies, iters, [&](int i) {
    ContiguousRead<<<sms * 8, 256>>>(at(i), bytes, sink);
  });
  DSV3_CUDA_CHECK(cudaGetLastError());
  auto pct = [&](double us) { return 100.0 * bytes / us * 1e-3 / copy_gbs; };
  std::printf("| %s %ld x %ld | %.1f (%.0f%%), split %d: %.1f |", name, n, k, gemm, pct(gemm),
              t[1].grid.ksplit, gemm_split);
  for (const Timing& v : t) std::printf(" %.1f (%.0f%%) |", v.us, pct(v.us));
  std::printf(" %.1f (%.0f%%) | %ld x %d / %d, full ring %ld x %d / %d |\n", contiguous,
              pct(contiguous), t[1].grid.blocks, t[1].grid.warps, t[1].grid.ksplit,
              t[2].grid.blocks, t[2].grid.warps, t[2].grid.ksplit);
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
  std::printf("device-to-device copy %.1f GB/s (read + write); %% of it; us per launch, M = 1\n\n",
              copy_gbs);
  std::printf(
      "| weight N x K | DenseFp8Gemm | row-major: kernel, 1 row | 8 rows | full ring | "
      "tile-major, contiguous copy: kernel | full ring | k-block-major, own fragments: kernel | "
      "contiguous copy: loads | kernel | full ring | contiguous read | grid (blocks x warps / "
      "split) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  const struct {
    const char* name;
    int64_t n, k;
  } shapes[] = {{"o_proj", 7168, 16384},
                {"q_b", 24576, 1536},
                {"q_a|kv_a", 2112, 7168},
                {"dense down", 7168, 18432},
                {"9 experts' gate|up", 9 * 4096, 7168},
                {"9 experts' down", 9 * 7168, 2048},
                // Power-of-two row strides (o_proj's 16 KB, the experts' down's 2 KB) against
                // the same weights with K padded by 512 zeros (rows 16.5 and 2.5 KB apart).
                {"o_proj, K 16896", 7168, 16896},
                {"9 experts' down, K 2560", 9 * 7168, 2560}};
  for (const auto& shape : shapes) Run(shape.name, shape.n, shape.k, copy_gbs, sink, sms);
  DSV3_CUDA_CHECK(cudaFree(sink));
  return 0;
}
