// Device pieces of the prefill grouped FP8 GEMM (fp8_grouped_gemm.cu, which holds the kernel,
// its producer and launch, and describes the recipe): the tile geometry, the wgmma, the
// producer's per-item weight coordinates and scale copies, and the consumers (mainloop,
// promotion, epilogue). Included only by that file (sm_90a).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/device_utils.cuh"
#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/grouped_gemm_schedule.h"
#include "kernels/sm90_async.cuh"
#include "kernels/weight_layout.cuh"

namespace dsv3::kernels::grouped_gemm {

constexpr int kBM = static_cast<int>(kGroupedTileRows);  // rows per item (the wgmma's M)
constexpr int kWgCols = 128;                             // columns per consumer (its N)
constexpr int kConsumers = 2;
constexpr int kBN = kConsumers * kWgCols;  // columns per item
static_assert(kBN == kGroupedItemCols);
constexpr int kBK = 128;                   // k per stage: one scale block, one 128-byte row
constexpr int kStages = 4;                 // 5 would leave no room for the output tiles
constexpr int kATile = kBM * kBK;          // bytes
constexpr int kBTile = kBN * kBK;
constexpr int kStageBytes = kATile + kBTile;  // 40 KB; tiles stay 1024-byte aligned (swizzle)
constexpr int kThreads = 128 * (1 + kConsumers);
constexpr int kScaleSlot = kBM + 8;  // floats per stage: 64 activation scales, 2 weight scales
constexpr int kEpiBytes = kBM * kWgCols * 2;  // a consumer's BF16 output tile (16 KB)
constexpr int kBarriers = 2;  // per stage: full, empty
constexpr int kSmemBytes =
    kStages * (kStageBytes + kScaleSlot * 4 + kBarriers * 8) + kConsumers * kEpiBytes + 1024;
// The weight tensor map's origin and the split of a weight's address into its coordinates.
constexpr uint64_t kWeightBase = 256;
constexpr int kWeightHighShift = 35;

// The items one block visits: first, first + step, ... below end.
struct ItemWalk {
  int64_t first, end, step;
};

// Dynamic shared memory: kStages stages of [A 64 x 128 B | B 256 x 128 B] (1024-byte aligned
// for the swizzle), the consumers' output tiles, the stages' scale slots, then the stages'
// barriers: full (operands landed), empty (consumers done).
struct SharedLayout {
  uint8_t* stages;
  uint8_t* epi;
  float* scales;
  uint32_t full0, empty0;  // barrier s at + 8 s

  __device__ explicit SharedLayout(uint8_t* raw)
      : stages(reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw) + 1023) &
                                          ~uintptr_t{1023})),
        epi(stages + kStages * kStageBytes),
        scales(reinterpret_cast<float*>(epi + kConsumers * kEpiBytes)),
        full0(SmemAddr(scales + kStages * kScaleSlot)),
        empty0(full0 + 8 * kStages) {}
};

// The tiles the launch covers: num_tiles, or fewer by the device count tiles_used.
__device__ __forceinline__ int64_t TilesInUse(const Fp8GroupedGemmParams& p) {
  return p.tiles_used != nullptr ? min(static_cast<int64_t>(*p.tiles_used), p.num_tiles)
                                 : p.num_tiles;
}

// The tensor maps of a launch (built on the host, passed by value): xq in boxes of 64 rows x
// 128 bytes; every weight matrix through one window of the address space, row-major (w) and
// k-block-major (wb), in boxes of 256 rows, and (SwiGLU output) of 128 rows (w_half, wb_half);
// y when it can go out by TMA stores (y_tma).
struct GroupedMaps {
  CUtensorMap x, w, wb, w_half, wb_half, y;
  bool y_tma;
};
GroupedMaps EncodeGroupedMaps(const Fp8GroupedGemmParams& p);

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

// The producer's view of one item: where its weight matrix lies (through map_w for row-major
// weights, map_wb for k-block-major ones: each k-block a [N_pad][128] slab of its own, at
// kb_bytes more address per k-block, at x0 = 0) and its scales. A SwiGLU item (swiglu) reads
// the same 128 columns of gate (matrix it.m = 0, consumer 0) and up (the next, consumer 1);
// gate and up share one layout.
struct ItemLoads {
  bool k_block_major;
  uint64_t off0, off1, kb_bytes;  // off1: up's (SwiGLU items)
  int32_t x0_step;
  const float* ws;  // lanes 16, 17: their consumer's weight scales (null past n)
  const float* xs;  // lanes 0-15: 4 of the tile's 64 activation scales

  __device__ ItemLoads(const Fp8GroupedGemmParams& p, const GroupedItem& it, int lane,
                       bool swiglu) {
    const int64_t e = __ldg(p.tile_expert + it.tile);
    const GroupedWeight* expert = p.weights + e * p.weights_stride + p.first;
    const GroupedWeight gw = expert[it.m];
    k_block_major = gw.k_block_major;
    x0_step = gw.k_block_major ? 0 : kBK;
    kb_bytes = gw.k_block_major ? WeightRowsPadded(p.n) * kBK : 0;
    off0 = reinterpret_cast<uintptr_t>(gw.w) - kWeightBase;
    off1 = swiglu ? reinterpret_cast<uintptr_t>(expert[1].w) - kWeightBase : off0;
    const int64_t wcol = it.col0 + (swiglu ? 0 : 128 * (lane - 16));
    const float* s = swiglu && lane == 17 ? expert[1].s : gw.s;
    ws = wcol < p.n ? s + (wcol / 128) * p.scale_stride : nullptr;
    xs = p.xs + it.tile * kBM + 4 * lane;
  }

  // Weight rows [col, col + box rows) of k-block kb of the matrix at offset `off` (off0, or
  // off1) into dst through map (map_w / map_wb or their half-box forms, as k_block_major says),
  // completing on bar.
  __device__ void LoadWeights(uint32_t dst, const CUtensorMap& map, uint32_t bar, int64_t kb,
                              int64_t col, uint64_t matrix_off) const {
    const uint64_t off = matrix_off + kb * kb_bytes;
    const int32_t w16 =
        static_cast<int32_t>((off & ((uint64_t{1} << kWeightHighShift) - 1)) >> 4);
    const int32_t whigh = static_cast<int32_t>(off >> kWeightHighShift);
    TmaLoad4d(dst, map, bar, static_cast<int32_t>(kb * x0_step), static_cast<int32_t>(col), w16,
              whigh);
  }

  // Lanes 0-15 copy the tile's 64 activation scales of k-block kb and lanes 16-17 the
  // consumers' two weight scales into the stage's scale slot (zero past n); every lane's
  // arrival on full follows its copies.
  __device__ void LoadScales(const Fp8GroupedGemmParams& p, uint32_t slot, uint32_t full,
                             int64_t kb, int lane) const {
    if (lane < 16) {
      CpAsync16(slot + 16 * lane, xs + kb * p.rows_padded);
    } else if (lane < 16 + kConsumers) {
      CpAsync4(slot + 4 * (kBM + lane - 16), ws != nullptr ? ws + kb : p.xs, ws != nullptr ? 4 : 0);
    }
    CpAsyncArrive(full);
  }
};

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

// A consumer warp's release of a stage: an arrival on empty by lane 0 once the warp is done
// with it.
__device__ __forceinline__ void Release(uint32_t empty, int lane) {
  __syncwarp();
  if (lane == 0) MbarArrive(empty);
}

__device__ __forceinline__ void BarSync(int id) {
  asm volatile("bar.sync %0, 128;" ::"r"(id) : "memory");
}
// Named barriers across both consumers (the SwiGLU epilogue's hand-over).
__device__ __forceinline__ void ConsumersSync(int id) {
  asm volatile("bar.sync %0, 256;" ::"r"(id) : "memory");
}
__device__ __forceinline__ void ConsumersArrive(int id) {
  asm volatile("bar.arrive %0, 256;" ::"r"(id) : "memory");
}

// The SwiGLU output's epilogue (Fp8GroupedGemmParams::h_q) for an item's 64 rows x 128 columns:
// consumer 1 (up) hands its accumulator, rounded to BF16, to consumer 0 (gate) through u_tile
// ([32][128] BF16 pairs, thread-major: conflict-free, and as both accumulators share the m64n128
// layout thread t reads what thread t of the other wrote). Consumer 0 forms h = BF16(silu(g) *
// u) and quantizes each row as QuantizeBlock128 does; a row's 128 columns lie in the quad of
// lanes sharing lane / 4 (32 each). Named barriers 3 (up's tile written) and 4 (consumer 0 done
// reading the last one) order the hand-over, once per item each; an arriving side need not wait,
// as bar.arrive performs its thread's earlier accesses for the barrier's participants (PTX).
// racecheck reports the hand-over as a potential RAW hazard all the same (docs/cuda.md,
// "Sanitizers").
__device__ __forceinline__ void SwigluEpilogue(const Fp8GroupedGemmParams& p,
                                               const float (&acc)[64], const GroupedItem& it,
                                               uint32_t* u_tile, int wg, int row, int lane) {
  const int t = threadIdx.x % 128;
  if (wg == 1) {
    ConsumersSync(4);
#pragma unroll
    for (int i = 0; i < 32; ++i) u_tile[i * 128 + t] = PackBf16(acc[2 * i], acc[2 * i + 1]);
    ConsumersArrive(3);
    return;
  }
  ConsumersArrive(4);
  ConsumersSync(3);
  float h[64];
  float amax[2] = {0.0f, 0.0f};  // rows row and row + 8
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const uint32_t u = u_tile[i * 128 + t], g = PackBf16(acc[2 * i], acc[2 * i + 1]);
    const float u0 = __uint_as_float(u << 16), u1 = __uint_as_float(u & 0xffff0000u);
    const float g0 = __uint_as_float(g << 16), g1 = __uint_as_float(g & 0xffff0000u);
    h[2 * i] = SiluMulBf16(g0, u0);
    h[2 * i + 1] = SiluMulBf16(g1, u1);
    amax[i % 2] = fmaxf(amax[i % 2], fmaxf(fabsf(h[2 * i]), fabsf(h[2 * i + 1])));
  }
  const float s0 = Block128Scale(QuadMax(amax[0]), p.h_ue8m0);
  const float s1 = Block128Scale(QuadMax(amax[1]), p.h_ue8m0);
  const int64_t r0 = it.tile * kBM + row, kb = it.col0 / 128;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int64_t c = it.col0 + 8 * j + 2 * (lane % 4);
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const float s = hr == 0 ? s0 : s1;
      const uint16_t codes = static_cast<uint16_t>(ToE4M3(h[4 * j + 2 * hr] / s) |
                                                   ToE4M3(h[4 * j + 2 * hr + 1] / s) << 8);
      *reinterpret_cast<uint16_t*>(p.h_q + (r0 + 8 * hr) * p.h_k_pad + c) = codes;
    }
  }
  if (lane % 4 == 0) {
    p.h_s[kb * p.rows_padded + r0] = s0;
    p.h_s[kb * p.rows_padded + r0 + 8] = s1;
  }
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

// Consumer warpgroup wg (0 or 1): columns [col0 + 128 wg, + 128) of each item walk visits
// (decode(w) gives item w; kSwiglu: columns [col0, + 128) of gate for wg 0, of up for wg 1, into
// SwigluEpilogue), releasing each stage through its empty barrier. Accumulator
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
template <bool kSwiglu, class DecodeFn>
__device__ void Consume(const Fp8GroupedGemmParams& p, const CUtensorMap& map_y, bool y_tma,
                        uint8_t* smem, const float* scales, uint8_t* epi, uint32_t full0,
                        uint32_t empty0, const ItemWalk& walk, DecodeFn decode, int wg) {
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
  for (int64_t w = walk.first; w < walk.end; w += walk.step) {
    const GroupedItem it = decode(w);
    const int64_t col0 = it.col0 + (kSwiglu ? 0 : wg * kWgCols);
    if (col0 >= p.n) {  // no columns of this item left: pass its stages on
      for (int64_t kb = 0; kb < kblocks; ++kb) {
        MbarWait(full0 + 8 * stage, phase);
        Release(empty0 + 8 * stage, lane);
        next();
      }
      if constexpr (kSwiglu) {  // h's block past n: codes 0 and the scale of an all-zero block
        const float zeros[64] = {};
        SwigluEpilogue(p, zeros, it, reinterpret_cast<uint32_t*>(epi), wg, row, lane);
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
    if constexpr (kSwiglu) {  // h's columns past n come out as zeros: their weights read as 0
      SwigluEpilogue(p, acc, it, reinterpret_cast<uint32_t*>(epi), wg, row, lane);
      continue;
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

}  // namespace dsv3::kernels::grouped_gemm
