// Hopper FP8 block-scaled grouped GEMM (see fp8_grouped_gemm.cuh), after DeepGEMM's recipe:
// wgmma.m64n128k32 e4m3 with both operands K-major in 128-byte-swizzled shared memory, the
// tensor-core accumulator restarted every 128-k block and "promoted" into an F32 accumulator
// with that block's scales (acc += partial * xs[kb, row] * s[col / 128, kb]).
//
// A work item is one 64-row tile (one expert) by 256 columns of one matrix. Block: 384 threads,
// warpgroup 0 the producer (one active warp), 1 and 2 the consumers (columns [0, 128) and
// [128, 256) of the item). The producer streams 128-k blocks through kStages shared-memory
// stages, each A [64 rows][128 B] and B [256 rows][128 B] by TMA (the copy engine applies the
// swizzle) plus the block's scales by cp.async, completing on a "full" mbarrier per stage;
// consumers release a stage through an "empty" mbarrier once their wgmmas have read it. The grid
// is persistent and both roles walk the same item sequence, so the producer fills the next
// item's stages while the consumers finish the current one. Each consumer alternates two partial
// accumulators, promoting one block while the next block's wgmmas run, and hands its BF16 output
// tile to a TMA store through shared memory (Consume), which drains during the next item.
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

#include "kernels/device_utils.cuh"
#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/launch.cuh"
#include "kernels/sm90_async.cuh"
#include "kernels/tensor_map.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kBM = static_cast<int>(kGroupedTileRows);  // rows per item (the wgmma's M)
constexpr int kWgCols = 128;                             // columns per consumer (its N)
constexpr int kConsumers = 2;
constexpr int kBN = kConsumers * kWgCols;  // columns per item
constexpr int kBK = 128;                   // k per stage: one scale block, one 128-byte row
constexpr int kStages = 4;                 // 5 would leave no room for the output tiles
constexpr int kATile = kBM * kBK;          // bytes
constexpr int kBTile = kBN * kBK;
constexpr int kStageBytes = kATile + kBTile;  // 40 KB; tiles stay 1024-byte aligned (swizzle)
constexpr int kThreads = 128 * (1 + kConsumers);
constexpr int kScaleSlot = kBM + 8;  // floats per stage: 64 activation scales, 2 weight scales
constexpr int kEpiBytes = kBM * kWgCols * 2;  // a consumer's BF16 output tile (16 KB)
constexpr int kSmemBytes =
    kStages * (kStageBytes + kScaleSlot * 4 + 2 * 8) + kConsumers * kEpiBytes + 1024;
// The weight tensor map's origin and the split of a weight's address into its coordinates.
constexpr uint64_t kWeightBase = 256;
constexpr int kWeightHighShift = 35;
// Items are ordered expert by expert: for each run of consecutive tiles of one expert, all
// its column blocks, tile fastest. The blocks running at one time then cover the tiles of one
// or a few experts against the same weight columns, so each weight tile comes from DRAM once
// and the rest from L2. (Groups of a fixed number of tiles would split experts between groups
// that run in different waves, each reading the expert's weights from DRAM.) Finding the run
// costs a scan of tile_expert as long as the run, a few tiles at prefill sizes.
struct Item {
  int64_t tile, m, col0;  // col0: first column of the item within matrix m
};

// Item w of the run holding tile w / blocks: the run of tiles [first, end) spans the items
// [first * blocks, end * blocks), so every item of the run finds the same run.
__device__ __forceinline__ Item DecodeItem(int64_t w, const int32_t* tile_expert,
                                           int64_t num_tiles, int64_t blocks_per_mat,
                                           int64_t blocks) {
  const int64_t t0 = w / blocks;
  const int32_t e = __ldg(tile_expert + t0);
  int64_t first = t0, end = t0 + 1;
  while (first > 0 && __ldg(tile_expert + first - 1) == e) --first;
  while (end < num_tiles && __ldg(tile_expert + end) == e) ++end;
  const int64_t run = end - first, rem = w - first * blocks, b = rem / run;
  return {first + rem % run, b / blocks_per_mat, b % blocks_per_mat * kBN};
}

// d (+)= A[64 x 32] * B[128 x 32]^T; accumulate = false overwrites d.
__device__ __forceinline__ void Wgmma64x128x32(float (&d)[64], uint64_t a, uint64_t b,
                                               bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " DSV3_WGMMA_R64
      "}, %64, %65, p, 1, 1;\n}\n"
      : DSV3_WGMMA_D8(0), DSV3_WGMMA_D8(8), DSV3_WGMMA_D8(16), DSV3_WGMMA_D8(24),
        DSV3_WGMMA_D8(32), DSV3_WGMMA_D8(40), DSV3_WGMMA_D8(48), DSV3_WGMMA_D8(56)
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));
}

__device__ __forceinline__ void TmaLoad4d(uint32_t dst, const CUtensorMap& map, uint32_t bar,
                                          int32_t x0, int32_t x1, int32_t x2, int32_t x3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, "
      "%4, %5, %6}], [%2];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(bar), "r"(x0), "r"(x1), "r"(x2), "r"(x3)
      : "memory");
}
// Producer (one warp): per k-block, lane 0 issues the two tile loads (the tensor maps apply the
// 128-byte swizzle and zero-fill weight rows >= n; map_w for row-major weights, map_wb for
// k-block-major ones), lanes 0-15 copy the tile's 64 activation scales and lanes 16-17 the
// consumers' two weight scales into the stage's scale slot.
__device__ void Produce(const CUtensorMap& map_x, const CUtensorMap& map_w,
                        const CUtensorMap& map_wb,
                        const Fp8GroupedGemmParams& p, uint8_t* smem, float* scales,
                        uint32_t full0, uint32_t empty0, int64_t num_tiles, int64_t items,
                        int64_t blocks_per_mat, int64_t blocks) {
  const int lane = threadIdx.x % 32;
  const int64_t kblocks = p.k_pad / kBK;
  int stage = 0;
  uint32_t phase = 0;
  for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
    const Item it = DecodeItem(w, p.tile_expert, num_tiles, blocks_per_mat, blocks);
    const int64_t e = __ldg(p.tile_expert + it.tile);
    const GroupedWeight gw = p.weights[e * p.weights_stride + p.first + it.m];
    // Row-major: k-block kb at x0 = kb kBK of map_w. K-block-major: each k-block a [N_pad][128]
    // slab of its own, at kb_bytes more address per k-block, through map_wb at x0 = 0.
    const CUtensorMap& map_gw = gw.k_block_major ? map_wb : map_w;
    const int32_t x0_step = gw.k_block_major ? 0 : kBK;
    const uint64_t kb_bytes = gw.k_block_major ? WeightRowsPadded(p.n) * kBK : 0;
    const uint64_t off0 = reinterpret_cast<uintptr_t>(gw.w) - kWeightBase;
    const int64_t wcol = it.col0 + 128 * (lane - 16);  // lanes 16, 17: a consumer's columns
    const float* ws = gw.s + (wcol / 128) * p.scale_stride;
    const float* xs = p.xs + it.tile * kBM + 4 * lane;
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      MbarWait(empty0 + 8 * stage, phase ^ 1);  // a fresh barrier passes parity 1 at once
      const uint32_t full = full0 + 8 * stage;
      if (lane == 0) {
        const uint32_t sa = SmemAddr(smem + stage * kStageBytes);
        MbarExpectTx(full, kStageBytes);
        TmaLoad2d(sa, map_x, full, static_cast<int32_t>(kb * kBK),
                  static_cast<int32_t>(it.tile * kBM));
        const uint64_t off = off0 + kb * kb_bytes;
        const int32_t w16 =
            static_cast<int32_t>((off & ((uint64_t{1} << kWeightHighShift) - 1)) >> 4);
        const int32_t whigh = static_cast<int32_t>(off >> kWeightHighShift);
        TmaLoad4d(sa + kATile, map_gw, full, static_cast<int32_t>(kb * x0_step),
                  static_cast<int32_t>(it.col0), w16, whigh);
      }
      const uint32_t slot = SmemAddr(scales + stage * kScaleSlot);
      if (lane < 16) {
        CpAsync16(slot + 16 * lane, xs + kb * p.rows_padded);
      } else if (lane < 16 + kConsumers) {
        const bool in = wcol < p.n;
        CpAsync4(slot + 4 * (kBM + lane - 16), in ? ws + kb : p.xs, in ? 4 : 0);
      }
      CpAsyncArrive(full);
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
  }
  asm volatile("cp.async.wait_all;" ::: "memory");
}

// d (+)= one stage's 128-k block for consumer wg: four wgmmas as one commit group.
__device__ __forceinline__ void IssueBlock(float (&part)[64], uint32_t stage_addr, int wg) {
  const uint64_t da = WgmmaDesc(stage_addr, 16, 1024);
  const uint64_t db = WgmmaDesc(stage_addr + kATile + wg * kWgCols * kBK, 16, 1024);
  FenceRegs(part);
  WgmmaFence();
#pragma unroll
  for (int k = 0; k < kBK / 32; ++k) Wgmma64x128x32(part, da + 2 * k, db + 2 * k, k > 0);
  WgmmaCommit();
}

// Waits until at most kPending block groups are in flight; part is then readable.
template <int kPending>
__device__ __forceinline__ void WaitBlock(float (&part)[64]) {
  WgmmaWait<kPending>();
  FenceRegs(part);
}

// Promotion of one block: rows row and row + 8 of this thread (see Consume) have scales s0, s1.
__device__ __forceinline__ void Promote(float (&acc)[64], const float (&part)[64], float s0,
                                        float s1) {
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = fmaf(part[i], (i % 4) < 2 ? s0 : s1, acc[i]);
}

__device__ __forceinline__ void Release(uint32_t empty, int lane) {
  __syncwarp();
  if (lane == 0) MbarArrive(empty);
}

__device__ __forceinline__ void BarSync(int id) {
  asm volatile("bar.sync %0, 128;" ::"r"(id) : "memory");
}

// Direct global stores of acc's columns [col0, col0 + 128) of matrix m (those < n), skipping the
// 64-column halves that went out by TMA (tma_half).
__device__ __forceinline__ void StoreDirect(const Fp8GroupedGemmParams& p, const float (&acc)[64],
                                            int64_t r0, int64_t m, int64_t col0, int lane,
                                            const bool (&tma_half)[2]) {
  const bool vec_store = p.n % 2 == 0 && p.y_stride % 2 == 0;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    if (tma_half[j / 8]) continue;
    const int64_t c = col0 + 8 * j + 2 * (lane % 4);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t o = (r0 + 8 * h) * p.y_stride + m * p.n + c;
      const float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
      if (p.y_f32) {
        float* y = static_cast<float*>(p.y) + o;
        if (vec_store && c + 1 < p.n) {
          *reinterpret_cast<float2*>(y) = make_float2(v0, v1);
        } else {
          if (c < p.n) y[0] = v0;
          if (c + 1 < p.n) y[1] = v1;
        }
      } else {
        bf16* y = static_cast<bf16*>(p.y) + o;
        if (vec_store && c + 1 < p.n) {
          *reinterpret_cast<__nv_bfloat162*>(y) = __floats2bfloat162_rn(v0, v1);
        } else {
          if (c < p.n) y[0] = __float2bfloat16_rn(v0);
          if (c + 1 < p.n) y[1] = __float2bfloat16_rn(v1);
        }
      }
    }
  }
}

// Consumer warpgroup wg (0 or 1): columns [col0 + 128 wg, + 128) of each item. Accumulator
// layout of m64n128 (thread t = 32 warp + lane): d[4j + h] is row 16 warp + lane / 4 (+ 8 for
// h >= 2), column 8j + 2 (lane % 4) + h % 2.
//
// Epilogue (y_tma): direct stores from the registers held the next item's wgmmas back (6% of
// gate|up's time, 16% of down's). Instead the BF16 tile goes to this warpgroup's
// [2][64 rows][128 B] buffer in the 128-byte-swizzled layout (16-byte chunk c of row r at chunk
// c ^ (r % 8): conflict-free, and what the y map expects), one thread issues two 64 x 64 TMA
// stores and the warpgroup goes on with the next item; the stores drain during its mainloop and
// are waited for (reads only) before the buffer is written again. Named barrier 1 + wg syncs the
// warpgroup (0 is __syncthreads).
__device__ void Consume(const Fp8GroupedGemmParams& p, const CUtensorMap& map_y, bool y_tma,
                        uint8_t* smem, const float* scales, uint8_t* epi, uint32_t full0,
                        uint32_t empty0, int64_t num_tiles, int64_t items,
                        int64_t blocks_per_mat, int64_t blocks, int wg) {
  const int t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  const int row = 16 * warp + lane / 4;  // and row + 8
  const int64_t kblocks = p.k_pad / kBK;
  int stage = 0;
  uint32_t phase = 0;
  auto next = [&] {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  };
  for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
    const Item it = DecodeItem(w, p.tile_expert, num_tiles, blocks_per_mat, blocks);
    const int64_t col0 = it.col0 + wg * kWgCols;
    if (col0 >= p.n) {  // no columns of this item left: pass its stages on
      for (int64_t kb = 0; kb < kblocks; ++kb) {
        MbarWait(full0 + 8 * stage, phase);
        Release(empty0 + 8 * stage, lane);
        next();
      }
      continue;
    }
    float acc[64], pa[64], pb[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    float sa0, sa1, sb0, sb1;  // the scales of pa's and pb's rows
    int sta, stb;              // and their stages
    auto start = [&](float(&part)[64], float& s0, float& s1, int& st) {
      MbarWait(full0 + 8 * stage, phase);
      const float* slot = scales + stage * kScaleSlot;
      const float sw = slot[kBM + wg];
      s0 = slot[row] * sw;
      s1 = slot[row + 8] * sw;
      IssueBlock(part, SmemAddr(smem + stage * kStageBytes), wg);
      st = stage;
      next();
    };
    auto finish = [&](float(&part)[64], float s0, float s1, int st) {
      Release(empty0 + 8 * st, lane);
      Promote(acc, part, s0, s1);
    };
    // Runs of 4 blocks: pa takes the even ones, pb the odd ones, each promoted while the next
    // one's wgmmas are in flight; the run's last block is waited for fully, as no wgmma group may
    // stay in flight across the loop's back edge (ptxas would then serialize every wgmma).
    for (int64_t kb = 0; kb < kblocks; kb += 4) {  // k_pad is a multiple of 512
      start(pa, sa0, sa1, sta);
      start(pb, sb0, sb1, stb);
      WaitBlock<1>(pa);
      finish(pa, sa0, sa1, sta);
      start(pa, sa0, sa1, sta);
      WaitBlock<1>(pb);
      finish(pb, sb0, sb1, stb);
      start(pb, sb0, sb1, stb);
      WaitBlock<1>(pa);
      finish(pa, sa0, sa1, sta);
      WaitBlock<0>(pb);
      finish(pb, sb0, sb1, stb);
    }

    const int64_t r0 = it.tile * kBM + row;
    bool tma_half[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int64_t c = col0 + 64 * hf;  // the last matrix's columns >= n are clipped by the map
      tma_half[hf] = y_tma && c < p.n && (c + 64 <= p.n || it.m == p.mats - 1);
    }
    if (tma_half[0] || tma_half[1]) {
      if (t == 0) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
      BarSync(1 + wg);
      const uint32_t buf = SmemAddr(epi + wg * kEpiBytes);
#pragma unroll
      for (int j = 0; j < 16; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const __nv_bfloat162 v =
              __floats2bfloat162_rn(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
          const uint32_t a = buf + (j / 8) * (kEpiBytes / 2) + (row + 8 * h) * 128 +
                             ((j % 8) ^ (lane / 4)) * 16 + (lane % 4) * 4;
          asm volatile("st.shared.b32 [%0], %1;" ::"r"(a),
                       "r"(*reinterpret_cast<const uint32_t*>(&v))
                       : "memory");
        }
      }
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      BarSync(1 + wg);
      if (t == 0) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          if (!tma_half[hf]) continue;
          asm volatile(
              "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];" ::"l"(
                  reinterpret_cast<uint64_t>(&map_y)),
              "r"(static_cast<int32_t>(it.m * p.n + col0 + 64 * hf)),
              "r"(static_cast<int32_t>(it.tile * kBM)), "r"(buf + hf * (kEpiBytes / 2))
              : "memory");
        }
        asm volatile("cp.async.bulk.commit_group;" ::: "memory");
      }
    }
    if (!tma_half[0] || !tma_half[1]) StoreDirect(p, acc, r0, it.m, col0, lane, tma_half);
  }
  if (t == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");  // smem outlives reads
}

__global__ void __launch_bounds__(kThreads, 1)
    Fp8GroupedGemmKernel(const __grid_constant__ CUtensorMap map_x,
                         const __grid_constant__ CUtensorMap map_w,
                         const __grid_constant__ CUtensorMap map_wb,
                         const __grid_constant__ CUtensorMap map_y, const Fp8GroupedGemmParams p,
                         bool y_tma) {
  KernelPrologue();
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint8_t* epi = smem + kStages * kStageBytes;  // 1024-byte aligned (the y map's swizzle)
  float* scales = reinterpret_cast<float*>(epi + kConsumers * kEpiBytes);
  const uint32_t full0 = SmemAddr(scales + kStages * kScaleSlot), empty0 = full0 + 8 * kStages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      MbarInit(full0 + 8 * s, 32 + 1);           // the producer's lanes + its expect_tx
      MbarInit(empty0 + 8 * s, 4 * kConsumers);  // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const int64_t blocks_per_mat = (p.n + kBN - 1) / kBN, blocks = p.mats * blocks_per_mat;
  const int64_t num_tiles =
      p.tiles_used != nullptr ? min(static_cast<int64_t>(*p.tiles_used), p.num_tiles) : p.num_tiles;
  const int64_t items = num_tiles * blocks;
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (threadIdx.x < 32) {
      Produce(map_x, map_w, map_wb, p, smem, scales, full0, empty0, num_tiles, items,
              blocks_per_mat, blocks);
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    Consume(p, map_y, y_tma, smem, scales, epi, full0, empty0, num_tiles, items, blocks_per_mat,
            blocks, wg - 1);
  }
}


}  // namespace

void Fp8GroupedGemm(const Fp8GroupedGemmParams& p, cudaStream_t stream) {
  if (p.num_tiles == 0 || p.n == 0 || p.mats == 0) return;
  assert(p.k_pad % 512 == 0 && p.rows_padded == p.num_tiles * kGroupedTileRows);
  assert(reinterpret_cast<uintptr_t>(p.xq) % 16 == 0);
  assert(reinterpret_cast<uintptr_t>(p.xs) % 16 == 0);
  int device = 0, sms = 0;
  DSV3_CUDA_CHECK(cudaGetDevice(&device));
  DSV3_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DSV3_CUDA_CHECK(cudaFuncSetAttribute(Fp8GroupedGemmKernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  // xq: [rows_padded, k_pad], boxes of 64 rows x 128 bytes.
  const cuuint64_t x_dims[2] = {static_cast<cuuint64_t>(p.k_pad),
                                static_cast<cuuint64_t>(p.rows_padded)};
  const cuuint64_t x_strides[1] = {static_cast<cuuint64_t>(p.k_pad)};
  const cuuint32_t x_box[2] = {kBK, kBM};
  const CUtensorMap map_x = EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, x_dims, x_strides,
                                            x_box, const_cast<uint8_t*>(p.xq));
  // Every weight matrix through one map, as a window of the address space: byte k of row c of
  // the matrix at w is kWeightBase + k + k_pad c + 16 x2 + 2^35 x3, with (x2, x3) from w - base
  // (a 16-byte-aligned offset of up to 2^35 bytes in x2, the rest in x3). Rows >= n are out of
  // the map and read as zeros. Boxes of 256 rows x 128 bytes.
  const cuuint64_t w_dims[4] = {static_cast<cuuint64_t>(p.k_pad), static_cast<cuuint64_t>(p.n),
                                cuuint64_t{1} << (kWeightHighShift - 4), cuuint64_t{1} << 20};
  const cuuint64_t w_strides[3] = {static_cast<cuuint64_t>(p.k_pad), 16,
                                   cuuint64_t{1} << kWeightHighShift};
  const cuuint32_t w_box[4] = {kBK, kBN, 1, 1};
  const CUtensorMap map_w =
      EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, w_dims, w_strides, w_box,
                      reinterpret_cast<void*>(uintptr_t{kWeightBase}));
  // k-block-major weights (weight_layout.cuh) through a second window whose rows are 128 bytes
  // apart: byte b of row c of the k-block slab at address a is kWeightBase + b + 128 c + 16 x2 +
  // 2^35 x3, with (x2, x3) from a - base (Produce adds the k-block's offset); the same boxes.
  const cuuint64_t wb_dims[4] = {kBK, static_cast<cuuint64_t>(p.n),
                                 cuuint64_t{1} << (kWeightHighShift - 4), cuuint64_t{1} << 20};
  const cuuint64_t wb_strides[3] = {kBK, 16, cuuint64_t{1} << kWeightHighShift};
  const cuuint32_t wb_box[4] = {kBK, kBN, 1, 1};
  const CUtensorMap map_wb =
      EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, wb_dims, wb_strides, wb_box,
                      reinterpret_cast<void*>(uintptr_t{kWeightBase}));
  // BF16 y by TMA stores where the map can address it (16-byte-aligned base and row stride, and
  // every box starting 16-byte-aligned: each matrix's columns, m * n on, too; a misaligned box
  // is an illegal instruction): all mats * n columns as one [rows_padded, mats * n] tensor,
  // boxes of 64 rows x 64 columns (the 128-byte swizzle's widest); columns past mats * n are
  // clipped by the map, a box that would cross into the next matrix is stored directly instead
  // (Consume).
  const bool y_tma = !p.y_f32 && reinterpret_cast<uintptr_t>(p.y) % 16 == 0 &&
                     p.y_stride % 8 == 0 && (p.mats == 1 || p.n % 8 == 0);
  CUtensorMap map_y{};
  if (y_tma) {
    const cuuint64_t y_dims[2] = {static_cast<cuuint64_t>(p.mats * p.n),
                                  static_cast<cuuint64_t>(p.rows_padded)};
    const cuuint64_t y_strides[1] = {static_cast<cuuint64_t>(p.y_stride * 2)};
    const cuuint32_t y_box[2] = {64, kBM};
    map_y =
        EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, y_dims, y_strides, y_box, p.y);
  }
  const int64_t items = p.num_tiles * p.mats * ((p.n + kBN - 1) / kBN);
  const int grid = static_cast<int>(std::min<int64_t>(items, sms));
  Launch(Fp8GroupedGemmKernel, grid, kThreads, kSmemBytes, stream, map_x, map_w, map_wb, map_y, p,
         y_tma);
}

}  // namespace dsv3::kernels
