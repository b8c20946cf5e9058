// Hopper FP8 block-scaled grouped GEMM (see fp8_grouped_gemm.cuh), after DeepGEMM's recipe:
// wgmma.m64n128k32 e4m3 with both operands K-major in 128-byte-swizzled shared memory, the
// tensor-core accumulator restarted every 128-k block and "promoted" into an F32 accumulator
// with that block's scales (acc += partial * xs[kb, row] * s[col / 128, kb]).
//
// A work item is one 64-row tile (one expert) by 256 columns of one matrix (with the SwiGLU
// output: the same 128 columns of gate and of up, whose product the consumers quantize in the
// epilogue). Block: 384 threads, warpgroup 0 the producer (one active warp), 1 and 2 the
// consumers (columns [0, 128) and [128, 256) of the item; SwiGLU: gate's, up's). The producer
// streams 128-k blocks through kStages shared-memory stages, each A [64 rows][128 B] and B [256
// rows][128 B] by TMA (the copy engine applies the swizzle) plus the block's scales by cp.async,
// completing on a "full" mbarrier per stage; consumers release a stage through an "empty"
// mbarrier once their wgmmas have read it. The grid is persistent and both roles walk the same
// item sequence, so the producer fills the next item's stages while the consumers finish the
// current one. Each consumer alternates two partial accumulators, promoting one block while the
// next block's wgmmas run, and hands its BF16 output tile to a TMA store through shared memory
// (Consume), which drains during the next item.
//
// Weights come from a device table (no host synchronization), so there is no tensor map per
// matrix: one map spans the whole address space and a matrix is selected by coordinates
// computed from its pointer (see Fp8GroupedGemm).
//
// The loads are TMA's because by cp.async (with a hand-applied swizzle) one SM's load/store unit
// did not keep enough bytes in flight; two partial accumulators and TMA stores of the output
// each paid too (docs/journal/2026-11-28-h200-runs.md; tools/dsv3-bench/grouped_gemm_bench.cu
// times it).
#include <cuda.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/fp8_grouped_gemm_tile.cuh"
#include "kernels/launch.cuh"
#include "kernels/tensor_map.cuh"

namespace dsv3::kernels {

using namespace grouped_gemm;  // NOLINT: this file is the kernel those pieces make

namespace {

// Producer (one warp): per k-block, lane 0 issues the tile loads (the tensor maps apply the
// 128-byte swizzle and zero-fill weight rows >= n; a SwiGLU item's weights as two 128-row boxes,
// gate's then up's), and the lanes copy the stage's scales.
template <bool kSwiglu, class DecodeFn>
__device__ void Produce(const GroupedMaps& maps, const Fp8GroupedGemmParams& p,
                        const SharedLayout& sh, const ItemWalk& walk, DecodeFn decode) {
  const int lane = threadIdx.x % 32;
  const int64_t kblocks = p.k_pad / kBK;
  int stage = 0;
  uint32_t phase = 0;
  for (int64_t w = walk.first; w < walk.end; w += walk.step) {
    const GroupedItem it = decode(w);
    const ItemLoads loads(p, it, lane, kSwiglu);
    const CUtensorMap& map_w = kSwiglu ? (loads.k_block_major ? maps.wb_half : maps.w_half)
                                       : (loads.k_block_major ? maps.wb : maps.w);
    // A SwiGLU item wholly past n (h's zero blocks up to h_k_pad) loads nothing: its consumers
    // pass the stages on (a TMA box wholly outside the weight window faulted).
    const bool skip = kSwiglu && it.col0 >= p.n;
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      MbarWait(sh.empty0 + 8 * stage, phase ^ 1);  // a fresh barrier passes parity 1 at once
      const uint32_t full = sh.full0 + 8 * stage;
      if (lane == 0 && !skip) {
        const uint32_t sa = SmemAddr(sh.stages + stage * kStageBytes);
        MbarExpectTx(full, kStageBytes);
        TmaLoad2d(sa, maps.x, full, static_cast<int32_t>(kb * kBK),
                  static_cast<int32_t>(it.tile * kBM));
        loads.LoadWeights(sa + kATile, map_w, full, kb, it.col0, loads.off0);
        if (kSwiglu) {
          loads.LoadWeights(sa + kATile + kWgCols * kBK, map_w, full, kb, it.col0, loads.off1);
        }
      } else if (lane == 0) {
        MbarExpectTx(full, 0);
      }
      loads.LoadScales(p, SmemAddr(sh.scales + stage * kScaleSlot), full, kb, lane);
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
  }
  asm volatile("cp.async.wait_all;" ::: "memory");
}

template <bool kSwiglu>
__global__ void __launch_bounds__(kThreads, 1)
    Fp8GroupedGemmKernel(const __grid_constant__ GroupedMaps maps,
                         const Fp8GroupedGemmParams p) {
  KernelPrologue();
  extern __shared__ uint8_t smem_raw[];
  const SharedLayout sh(smem_raw);
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      MbarInit(sh.full0 + 8 * s, 32 + 1);           // the producer's lanes + its expect_tx
      MbarInit(sh.empty0 + 8 * s, 4 * kConsumers);  // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  // SwiGLU items: 128 columns of h (of gate and up each), up to h_k_pad.
  constexpr int64_t kItemCols = kSwiglu ? kWgCols : kBN;
  const int64_t blocks_per_mat = kSwiglu ? p.h_k_pad / kItemCols : (p.n + kBN - 1) / kBN;
  const int64_t blocks = (kSwiglu ? 1 : p.mats) * blocks_per_mat;
  const int64_t num_tiles = TilesInUse(p);
  const ItemWalk walk{blockIdx.x, num_tiles * blocks, gridDim.x};
  auto decode = [&](int64_t w) {
    return DecodeGroupedItem(w, p.tile_expert, num_tiles, blocks_per_mat, blocks, kItemCols);
  };
  static_assert(kConsumers == 2, "TwoConsumerRegisters");
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    TwoConsumerRegisters::Producer();
    if (threadIdx.x < 32) Produce<kSwiglu>(maps, p, sh, walk, decode);
  } else {
    TwoConsumerRegisters::Consumer();
    Consume<kSwiglu>(p, maps.y, maps.y_tma, sh.stages, sh.scales, sh.epi, sh.full0, sh.empty0,
                     walk, decode, wg - 1);
  }
}

// The weight windows (GroupedMaps::w, wb) in boxes of box_rows rows.
void EncodeWeightMaps(const Fp8GroupedGemmParams& p, cuuint32_t box_rows, CUtensorMap* w,
                      CUtensorMap* wb) {
  // Every weight matrix through one map, as a window of the address space: byte k of row c of
  // the matrix at w is kWeightBase + k + k_pad c + 16 x2 + 2^35 x3, with (x2, x3) from w - base
  // (a 16-byte-aligned offset of up to 2^35 bytes in x2, the rest in x3). Rows >= n are out of
  // the map and read as zeros.
  const cuuint64_t w_dims[4] = {static_cast<cuuint64_t>(p.k_pad), static_cast<cuuint64_t>(p.n),
                                cuuint64_t{1} << (kWeightHighShift - 4), cuuint64_t{1} << 20};
  const cuuint64_t w_strides[3] = {static_cast<cuuint64_t>(p.k_pad), 16,
                                   cuuint64_t{1} << kWeightHighShift};
  const cuuint32_t box[4] = {kBK, box_rows, 1, 1};
  *w = EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, w_dims, w_strides, box,
                       reinterpret_cast<void*>(uintptr_t{kWeightBase}));
  // k-block-major weights (weight_layout.cuh) through a second window whose rows are 128 bytes
  // apart: byte b of row c of the k-block slab at address a is kWeightBase + b + 128 c + 16 x2 +
  // 2^35 x3, with (x2, x3) from a - base (ItemLoads adds the k-block's offset).
  const cuuint64_t wb_dims[4] = {kBK, static_cast<cuuint64_t>(p.n),
                                 cuuint64_t{1} << (kWeightHighShift - 4), cuuint64_t{1} << 20};
  const cuuint64_t wb_strides[3] = {kBK, 16, cuuint64_t{1} << kWeightHighShift};
  *wb = EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, wb_dims, wb_strides, box,
                        reinterpret_cast<void*>(uintptr_t{kWeightBase}));
}

}  // namespace

GroupedMaps grouped_gemm::EncodeGroupedMaps(const Fp8GroupedGemmParams& p) {
  GroupedMaps maps{};
  // xq: [rows_padded, k_pad], boxes of 64 rows x 128 bytes.
  const cuuint64_t x_dims[2] = {static_cast<cuuint64_t>(p.k_pad),
                                static_cast<cuuint64_t>(p.rows_padded)};
  const cuuint64_t x_strides[1] = {static_cast<cuuint64_t>(p.k_pad)};
  const cuuint32_t x_box[2] = {kBK, kBM};
  maps.x = EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, x_dims, x_strides, x_box,
                           const_cast<uint8_t*>(p.xq));
  EncodeWeightMaps(p, kBN, &maps.w, &maps.wb);
  if (p.h_q != nullptr) EncodeWeightMaps(p, kWgCols, &maps.w_half, &maps.wb_half);
  // BF16 y by TMA stores where the map can address it (16-byte-aligned base and row stride, and
  // every box starting 16-byte-aligned: each matrix's columns, m * n on, too; a misaligned box
  // is an illegal instruction): all mats * n columns as one [rows_padded, mats * n] tensor,
  // boxes of 64 rows x 64 columns (the 128-byte swizzle's widest); columns past mats * n are
  // clipped by the map, a box that would cross into the next matrix is stored directly instead
  // (Consume).
  maps.y_tma = !p.y_f32 && reinterpret_cast<uintptr_t>(p.y) % 16 == 0 && p.y_stride % 8 == 0 &&
               (p.mats == 1 || p.n % 8 == 0);
  if (maps.y_tma) {
    const cuuint64_t y_dims[2] = {static_cast<cuuint64_t>(p.mats * p.n),
                                  static_cast<cuuint64_t>(p.rows_padded)};
    const cuuint64_t y_strides[1] = {static_cast<cuuint64_t>(p.y_stride * 2)};
    const cuuint32_t y_box[2] = {64, kBM};
    maps.y =
        EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, y_dims, y_strides, y_box, p.y);
  }
  return maps;
}

void Fp8GroupedGemm(const Fp8GroupedGemmParams& p, cudaStream_t stream) {
  if (p.num_tiles == 0 || p.n == 0 || p.mats == 0) return;
  assert(p.k_pad % 512 == 0 && p.rows_padded == p.num_tiles * kGroupedTileRows);
  assert(reinterpret_cast<uintptr_t>(p.xq) % 16 == 0);
  assert(reinterpret_cast<uintptr_t>(p.xs) % 16 == 0);
  const GroupedMaps maps = EncodeGroupedMaps(p);
  int device = 0, sms = 0;
  DSV3_CUDA_CHECK(cudaGetDevice(&device));
  DSV3_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const bool swiglu = p.h_q != nullptr;
  assert(!swiglu || (p.mats == 2 && p.h_k_pad % 128 == 0 && p.h_k_pad >= p.n && p.h_s != nullptr));
  auto* kernel = swiglu ? Fp8GroupedGemmKernel<true> : Fp8GroupedGemmKernel<false>;
  DSV3_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const int64_t items =
      p.num_tiles * (swiglu ? p.h_k_pad / kWgCols : p.mats * ((p.n + kBN - 1) / kBN));
  const int grid = static_cast<int>(std::min<int64_t>(items, sms));
  Launch(kernel, grid, kThreads, kSmemBytes, stream, maps, p);
}

}  // namespace dsv3::kernels
