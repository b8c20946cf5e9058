// FlashAttention-2 on mma.sync (BF16 m16n8k16, F32 accumulators) for MLA prefill. Block (query
// tile, head): 4 warps, 32 query rows each (two 16-row mma tiles, so every K and V fragment read
// from shared memory feeds two MMAs), two blocks per SM so that one block's softmax overlaps the
// other's MMAs; keys stream through shared memory 48 at a time, double-buffered by cp.async; the
// softmax is online (exp2 with the scale folded in, O rescaled only when some row's max grew).
// Key tiles past the diagonal are never loaded, and warps whose rows all precede a key tile skip
// it.
//
// Measured on the H200 (T = 4096 causal, 128 heads, counting 2 * T^2/2 * 128 * (192 + 128)
// FLOPs): 2.90 ms, 237 TFLOP/s, against 3.09 ms for the first version (8 warps x 16 rows, Q in
// registers, 64-key tiles, one block per SM) and 6.9 ms for the cuBLASLt GEMMs it replaced.
// Variants that timed the same or worse: 32 or 64 keys per tile, 2 or 3 stages (2.92 - 2.93),
// 8 warps x 32 rows (2.93), 64-row blocks with Q in registers (3.57 - 3.98), a one-warpgroup
// wgmma version without warp specialization (3.66). Rounding P to BF16 leaves ~2e-3 relative
// error against an F64 reference.
#include "kernels/device_utils.cuh"
#include "kernels/flash_mla_prefill.cuh"
#include "kernels/launch_check.h"

namespace dsv3::kernels {

namespace {

constexpr int kQk = kFlashMlaNope + kFlashMlaRope, kV = kFlashMlaV;
constexpr int kMTiles = 2;       // 16-row mma tiles per warp: each K/V fragment feeds 2 MMAs
constexpr int kWarps = 4;        // warps per block
constexpr int kKeys = 48;        // keys per tile
constexpr int kStages = 2;       // key tiles in flight
constexpr int kBlocksPerSm = 2;  // so that one block's softmax overlaps the other's MMAs
constexpr int kRows = kWarps * 16 * kMTiles;  // query rows per block
static_assert(kRows == kFlashMlaTileTokens);
constexpr int kThreads = kWarps * 32;
constexpr int kQkChunks = kQk / 8, kVChunks = kV / 8;  // 16-byte chunks per row

// Shared memory, BF16: Q [kRows, 192], then kStages stages of K [kKeys, 192] and V [kKeys, 128]:
// 48 + 2 * 30 = 108 KB, two blocks per SM (255 registers for 128 threads allow two as well).
constexpr int kQBytes = kRows * kQk * 2, kKBytes = kKeys * kQk * 2, kVBytes = kKeys * kV * 2;
constexpr int kStageBytes = kKBytes + kVBytes;
constexpr int kSmemBytes = kQBytes + kStages * kStageBytes;

// Byte offset of 16-byte chunk c of row r in a tile of `chunks` chunks per row (a multiple of 8).
// Rows are 384 or 256 bytes, so without the swizzle the 8 rows one ldmatrix reads would share
// their banks; XOR-ing the chunk with r % 8 spreads them over all 32.
__device__ __forceinline__ uint32_t Swizzle(int r, int c, int chunks) {
  return static_cast<uint32_t>((r * chunks + (c ^ (r & 7))) * 16);
}

__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool valid) {
  // src-size 0 zero-fills: rows past the sequence must hold finite values (0 * NaN in P V).
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ldmatrix stays volatile (ordered against the barriers); the MMAs are pure register math that
// ptxas may interleave with the loads and the softmax.
__device__ __forceinline__ void Ldsm4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void Ldsm4Trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a b: a 16x16 (row-major fragments), b 16x8 (b0: k 0-7, b1: k 8-15).
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float QuadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float QuadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Copies keys [k0, k0 + kKeys) of one head into a stage (K then V): K rows are the head's
// k_nope (128) then the shared k_pe (64); V rows the head's v. Keys at or past `keys` are
// zero-filled.
__device__ __forceinline__ void LoadKeys(const FlashMlaPrefillParams& p, const bf16* kv_head,
                                         const bf16* pe, int k0, int keys, uint32_t stage) {
  const uint32_t sk = stage, sv = stage + kKBytes;
#pragma unroll
  for (int i = threadIdx.x; i < kKeys * kQkChunks; i += kThreads) {
    const int r = i / kQkChunks, c = i % kQkChunks;
    const bool valid = k0 + r < keys;
    const int64_t row = valid ? k0 + r : 0;
    const bf16* src = c < kFlashMlaNope / 8
                          ? kv_head + row * p.kv_row_stride + c * 8
                          : pe + row * p.latent_stride + (c - kFlashMlaNope / 8) * 8;
    CpAsync16(sk + Swizzle(r, c, kQkChunks), src, valid);
  }
#pragma unroll
  for (int i = threadIdx.x; i < kKeys * kVChunks; i += kThreads) {
    const int r = i / kVChunks, c = i % kVChunks;
    const bool valid = k0 + r < keys;
    const int64_t row = valid ? k0 + r : 0;
    CpAsync16(sv + Swizzle(r, c, kVChunks), kv_head + row * p.kv_row_stride + kFlashMlaNope + c * 8,
              valid);
  }
}

// Block (tile, head), tiles the fast grid dimension: the blocks in flight share a few heads,
// whose K and V (2.6 MB per head at 4096 keys) stay in L2 across their query tiles. Warp w owns
// rows [16 kMTiles w, + 16 kMTiles); thread (warp, lane = 4 g + t) holds, per 16-row mma tile mt
// and 8-column slice of an accumulator, rows 16 (kMTiles w + mt) + g and + 8 at columns 2 t,
// 2 t + 1 (the mma C layout).
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    FlashMlaPrefillKernel(const FlashMlaPrefillParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const FlashMlaTile tile = p.tiles[blockIdx.x];
  const int64_t h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint32_t sq = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t stages = sq + kQBytes;  // stage s at stages + s * kStageBytes
  const int keys = tile.pos + tile.rows;
  const int key_tiles = (keys + kKeys - 1) / kKeys;

  // Rows past the tile's tokens are zero queries whose outputs are dropped.
  const bf16* q =
      static_cast<const bf16*>(p.q) + tile.q_row * p.q_token_stride + h * p.q_head_stride;
  for (int i = threadIdx.x; i < kRows * kQkChunks; i += kThreads) {
    const int r = i / kQkChunks, c = i % kQkChunks;
    const bool valid = r < tile.rows;
    CpAsync16(sq + Swizzle(r, c, kQkChunks), q + (valid ? r : 0) * p.q_token_stride + c * 8, valid);
  }
  const bf16* kv_head = static_cast<const bf16*>(p.kv) + tile.dense_offset * p.kv_row_stride +
                        h * (kFlashMlaNope + kFlashMlaV);
  const bf16* pe =
      static_cast<const bf16*>(p.latents) + tile.dense_offset * p.latent_stride + p.rope_offset;
  // Commit groups: Q with key tile 0, then one per key tile (empty past the last), so that
  // tile kt is always group kt.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < key_tiles) LoadKeys(p, kv_head, pe, s * kKeys, keys, stages + s * kStageBytes);
    CpAsyncCommit();
  }

  const int row0 = warp * 16 * kMTiles;
  const int last_pos = tile.pos + row0 + 16 * kMTiles - 1;  // the warp's last row's position
  const float scale_log2 = p.scale * 1.4426950408889634f;
  float o[kMTiles][kV / 8][4] = {};
  // Per mma tile, the thread's two rows: raw-score max and partial sums.
  float m[kMTiles][2], l[kMTiles][2] = {};
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) m[mt][0] = m[mt][1] = -INFINITY;

  for (int kt = 0, stage = 0; kt < key_tiles; ++kt, stage = stage + 1 == kStages ? 0 : stage + 1) {
    const int k0 = kt * kKeys;
    const uint32_t sk = stages + stage * kStageBytes, sv = sk + kKBytes;
    CpAsyncWait<kStages - 2>();
    // Tile kt is in for every thread, and every warp is done with tile kt - 1, whose stage
    // takes tile kt + kStages - 1.
    __syncthreads();
    const int next = kt + kStages - 1;
    if (next < key_tiles) {
      LoadKeys(p, kv_head, pe, next * kKeys, keys,
               stages + (stage == 0 ? kStages - 1 : stage - 1) * kStageBytes);
    }
    CpAsyncCommit();
    // Key tile 0 is never skipped, so every row's max is finite from the first tile on.
    if (k0 > last_pos) continue;
    float s[kMTiles][kKeys / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < kQk / 16; ++kk) {
      uint32_t a[kMTiles][4];  // Q from shared memory: 32 rows x 192 would not fit in registers
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        Ldsm4(sq + Swizzle(row0 + 16 * mt + lane % 16, 2 * kk + lane / 16, kQkChunks), a[mt]);
      }
#pragma unroll
      for (int j = 0; j < kKeys / 16; ++j) {
        uint32_t b[4];
        Ldsm4(sk + Swizzle(16 * j + lane % 8 + (lane / 16) * 8, 2 * kk + (lane / 8) % 2, kQkChunks),
              b);
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          Mma(s[mt][2 * j], a[mt], b[0], b[1]);
          Mma(s[mt][2 * j + 1], a[mt], b[2], b[3]);
        }
      }
    }
    const bool diagonal = k0 + kKeys - 1 > tile.pos + row0;  // some keys follow some rows
    uint32_t pa[kMTiles][kKeys / 16][4];  // P as mma A fragments, 16 keys each
    bool grew = false;                    // some row's max grew: O needs rescaling
    float alpha[kMTiles][2];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      const int pos0 = tile.pos + row0 + 16 * mt + g, pos1 = pos0 + 8;
      if (diagonal) {
#pragma unroll
        for (int nt = 0; nt < kKeys / 8; ++nt) {
          const int key = k0 + nt * 8 + 2 * t;
          if (key > pos0) s[mt][nt][0] = -INFINITY;
          if (key + 1 > pos0) s[mt][nt][1] = -INFINITY;
          if (key > pos1) s[mt][nt][2] = -INFINITY;
          if (key + 1 > pos1) s[mt][nt][3] = -INFINITY;
        }
      }
      float mx0 = m[mt][0], mx1 = m[mt][1];
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
        mx0 = fmaxf(mx0, fmaxf(s[mt][nt][0], s[mt][nt][1]));
        mx1 = fmaxf(mx1, fmaxf(s[mt][nt][2], s[mt][nt][3]));
      }
      mx0 = QuadMax(mx0);
      mx1 = QuadMax(mx1);
      grew |= mx0 != m[mt][0] || mx1 != m[mt][1];
      alpha[mt][0] = Exp2((m[mt][0] - mx0) * scale_log2);
      alpha[mt][1] = Exp2((m[mt][1] - mx1) * scale_log2);
      m[mt][0] = mx0;
      m[mt][1] = mx1;
      const float b0 = mx0 * scale_log2, b1 = mx1 * scale_log2;
      float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
        s[mt][nt][0] = Exp2(fmaf(s[mt][nt][0], scale_log2, -b0));
        s[mt][nt][1] = Exp2(fmaf(s[mt][nt][1], scale_log2, -b0));
        s[mt][nt][2] = Exp2(fmaf(s[mt][nt][2], scale_log2, -b1));
        s[mt][nt][3] = Exp2(fmaf(s[mt][nt][3], scale_log2, -b1));
        sum0 += s[mt][nt][0] + s[mt][nt][1];
        sum1 += s[mt][nt][2] + s[mt][nt][3];
      }
      l[mt][0] = l[mt][0] * alpha[mt][0] + sum0;
      l[mt][1] = l[mt][1] * alpha[mt][1] + sum1;
      // The probabilities' C fragments are, pairwise, A fragments of 16 keys.
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        pa[mt][kk][0] = PackBf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][kk][1] = PackBf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][kk][2] = PackBf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][kk][3] = PackBf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
    }
    // Once the running max settles (most key tiles), alpha is exactly 1 for the whole warp and
    // the 64 kMTiles multiplies of O are skipped.
    if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int dt = 0; dt < kV / 8; ++dt) {
          o[mt][dt][0] *= alpha[mt][0];
          o[mt][dt][1] *= alpha[mt][0];
          o[mt][dt][2] *= alpha[mt][1];
          o[mt][dt][3] *= alpha[mt][1];
        }
      }
    }
    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
#pragma unroll
      for (int d = 0; d < kV / 16; ++d) {
        uint32_t b[4];
        Ldsm4Trans(
            sv + Swizzle(16 * kk + lane % 8 + ((lane / 8) % 2) * 8, 2 * d + lane / 16, kVChunks),
            b);
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          Mma(o[mt][2 * d], pa[mt][kk], b[0], b[1]);
          Mma(o[mt][2 * d + 1], pa[mt][kk], b[2], b[3]);
        }
      }
    }
  }

  bf16* out = static_cast<bf16*>(p.out) + tile.q_row * p.out_token_stride + h * kV + 2 * t;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const float inv0 = 1.0f / QuadSum(l[mt][0]), inv1 = 1.0f / QuadSum(l[mt][1]);
    const int r0 = row0 + 16 * mt + g, r1 = r0 + 8;
#pragma unroll
    for (int dt = 0; dt < kV / 8; ++dt) {
      if (r0 < tile.rows) {
        *reinterpret_cast<uint32_t*>(out + r0 * p.out_token_stride + dt * 8) =
            PackBf16(o[mt][dt][0] * inv0, o[mt][dt][1] * inv0);
      }
      if (r1 < tile.rows) {
        *reinterpret_cast<uint32_t*>(out + r1 * p.out_token_stride + dt * 8) =
            PackBf16(o[mt][dt][2] * inv1, o[mt][dt][3] * inv1);
      }
    }
  }
}

}  // namespace

void FlashMlaPrefill(const FlashMlaPrefillParams& p, cudaStream_t stream) {
  if (p.num_tiles == 0 || p.heads == 0) return;
  // Per launch rather than once: the attribute belongs to the current device.
  DSV3_CUDA_CHECK(cudaFuncSetAttribute(FlashMlaPrefillKernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  FlashMlaPrefillKernel<<<dim3(static_cast<unsigned>(p.num_tiles), static_cast<unsigned>(p.heads)),
                          kThreads, kSmemBytes, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv3::kernels
