// The small-M FP8 GEMM's warp tile (kernels/moe_grouped.cu; tools/dsv3-bench's
// weight_layout_bench.cu takes it apart): 16 weight rows by 8 tokens over one 128-k block on
// tensor cores, from weights and activations loaded straight into registers. Included only by
// .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dsv3::kernels {

// Tensor-core GEMM of few rows per weight. A warp tile is 16 output columns (the mma's M: weight
// rows c0 .. c0 + 15) by 8 tokens (its N). Hopper has no e4m3 mma.sync (its FP8 tensor cores are
// reached through wgmma only): ptxas lowers mma.m16n8k32.e4m3 to conversions plus f16 mmas, per
// instruction, so the weights would be converted again for every token tile. Here each k-block
// of weights is converted once (cvt.rn.f16x2.e4m3x2, exact: e4m3 values are f16 values) and
// shared by the token tiles, through mma.m16n8k16.f16 with F32 accumulation: the same products
// and sums. Lane = 4g + t; fragments (PTX ISA, mma.m16n8k16 .f16; CUTLASS's SM80_16x8x16 traits
// agree), two f16 a register:
//   A: a0 row g, k 2t, 2t+1;  a1 row g+8, k 2t, 2t+1;  a2 row g, k 2t+8, 2t+9;  a3 row g+8, same
//   B: b0 token g, k 2t, 2t+1;  b1 token g, k 2t+8, 2t+9
//   C: c0, c1 row g, tokens 2t, 2t+1;  c2, c3 row g+8, tokens 2t, 2t+1
// A dot product is unchanged by a permutation of k applied to A and B alike, and the k slot a
// value fills depends on (t, register, half) only, never on g. So within a 128-k block each lane
// loads its own 32 bytes, k [16t, 16t + 16) and [64 + 16t, 64 + 16t + 16), of weight rows g and
// g + 8 and of token g (every warp-wide 16-byte load then reads 64 contiguous bytes of each row);
// its 4-byte word s (of 8) becomes two f16x2 words, which mma step s takes as (a0, a2) for row g,
// (a1, a3) for row g + 8 and (b0, b1) for the token.

constexpr int kTileCols = 16;  // output columns per warp tile (the mma's M)
constexpr int kTokens = 8;     // tokens per mma (its N)

// Weights are read once per pass: kept out of L1, which serves the activations that every warp
// of the block rereads. kOrdered: volatile, so that the compiler cannot issue the load ahead of
// the test that guards it (the grouped kernel's warps past the last tile hold no weight address).
template <bool kOrdered = false>
__device__ __forceinline__ uint4 LoadStreaming(const uint8_t* p) {
  uint4 v;
  if constexpr (kOrdered) {
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
  } else {
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
  }
  return v;
}

__device__ __forceinline__ void MmaF16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                       uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// A lane's 32 bytes of one row in a k-block (low and high 16) as 16 f16x2 words: 2s and 2s + 1
// from byte word s.
__device__ __forceinline__ void ToF16(uint32_t (&out)[16], const uint4 (&raw)[2]) {
  const uint32_t words[8] = {raw[0].x, raw[0].y, raw[0].z, raw[0].w,
                             raw[1].x, raw[1].y, raw[1].z, raw[1].w};
#pragma unroll
  for (int s = 0; s < 8; ++s) {
    asm("{\n"
        "  .reg .b16 lo, hi;\n"
        "  mov.b32 {lo, hi}, %2;\n"
        "  cvt.rn.f16x2.e4m3x2 %0, lo;\n"
        "  cvt.rn.f16x2.e4m3x2 %1, hi;\n"
        "}"
        : "=r"(out[2 * s]), "=r"(out[2 * s + 1])
        : "r"(words[s]));
  }
}

// d = the 16 x 8 product over one 128-k block, from this lane's f16 words of weight rows g (wg)
// and g + 8 (wg8) and of token g (x). Its 8 mmas run as two independent chains (even and odd
// steps) added at the end, which shortens the dependent mma latency each warp waits through
// before its next loads; four chains spill registers in the dense kernel (measurements:
// docs/journal/2026-12-02-fused-shared-expert-and-negative-levers.md).
constexpr int kMmaChains = 2;
__device__ __forceinline__ void BlockMma(float (&d)[4], const uint32_t (&wg)[16],
                                         const uint32_t (&wg8)[16], const uint32_t (&x)[16]) {
  float c[kMmaChains][4] = {};
#pragma unroll
  for (int s = 0; s < 8; ++s) {
    MmaF16(c[s % kMmaChains], wg[2 * s], wg8[2 * s], wg[2 * s + 1], wg8[2 * s + 1], x[2 * s],
           x[2 * s + 1]);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    d[i] = c[0][i];
#pragma unroll
    for (int j = 1; j < kMmaChains; ++j) d[i] += c[j][i];
  }
}

// This lane's 32 bytes of weight rows g and g + 8 in k-block kb (BlockMma's wg and wg8 before
// conversion), from w, its bytes of row g in the k-block, and row8, the bytes from row g to row
// g + 8.
template <bool kOrdered = false>
__device__ __forceinline__ void LoadWeightBlock(const uint8_t* w, int32_t row8, uint4 (&g)[2],
                                                uint4 (&g8)[2]) {
  g[0] = LoadStreaming<kOrdered>(w);
  g[1] = LoadStreaming<kOrdered>(w + 64);
  g8[0] = LoadStreaming<kOrdered>(w + row8);
  g8[1] = LoadStreaming<kOrdered>(w + row8 + 64);
}

// acc += one k-block's 16 x 8 product (BlockMma) with the token fragment raw_x, scaled by the
// weight block's scale ws and the activation scales xsa, xsb of output rows 2t and 2t + 1.
__device__ __forceinline__ void AccumulateBlock(float (&acc)[4], const uint32_t (&wg)[16],
                                                const uint32_t (&wg8)[16], const uint4 (&raw_x)[2],
                                                float ws, float xsa, float xsb) {
  uint32_t x[16];
  ToF16(x, raw_x);
  float d[4];
  BlockMma(d, wg, wg8, x);
  const float sa = ws * xsa, sb = ws * xsb;
  acc[0] = fmaf(d[0], sa, acc[0]);
  acc[1] = fmaf(d[1], sb, acc[1]);
  acc[2] = fmaf(d[2], sa, acc[2]);
  acc[3] = fmaf(d[3], sb, acc[3]);
}

// This lane's activation bytes of token tile `base` in k-block kb (token g, as BlockMma takes
// them) and the activation scales of its output rows 2t and 2t + 1, from xq [rows_padded, k_pad]
// and xs [k_pad / 128, rows_padded]. Rows past the group's end read its last row instead; their
// results are not stored. Offsets are 32-bit (the caller checks rows_padded * k_pad fits): from
// the two base pointers, no 64-bit index arithmetic.
__device__ __forceinline__ void LoadTokenFragment(const uint8_t* xq, const float* xs, int32_t k_pad,
                                                  int32_t rows_padded, int32_t base, int32_t r_end,
                                                  int32_t kb, int g, int t, uint4 (&raw)[2],
                                                  float& sa, float& sb) {
  const int32_t xr = min(base + g, r_end - 1);
  const int32_t ra = min(base + 2 * t, r_end - 1), rb = min(base + 2 * t + 1, r_end - 1);
  const uint8_t* px = xq + (xr * k_pad + kb * 128 + 16 * t);
  raw[0] = __ldg(reinterpret_cast<const uint4*>(px));
  raw[1] = __ldg(reinterpret_cast<const uint4*>(px + 64));
  const float* ps = xs + kb * rows_padded;
  sa = __ldg(ps + ra);
  sb = __ldg(ps + rb);
}

}  // namespace dsv3::kernels
