// Absorbed-form MLA decode for Hopper (sm_90a wgmma, warp-specialized), FlashMLA's shape of the
// problem: every head of a group reads the same latent rows, so a block takes 64 heads as the
// MMA's M and one pass over its keys serves them all.
//
// Block (split, head group of 64, item), 384 threads. Warpgroup 0 is the producer: it gathers
// the item's query [64 heads, 576] once and its paged latent rows in 64-key tiles [64, 576]
// (cp.async through the block table, zeros past the context) into a ring of two shared-memory
// stages, each completing on a "full" mbarrier. Warpgroups 1 and 2 are the consumers c = 0, 1;
// per tile each computes S_c = Q K^T for keys [32 c, 32 c + 32) (wgmma m64n32k16, Q and K from
// shared memory), the two exchange their row maxima through shared memory, each writes its
// probabilities P_c (BF16) into one shared [64, 64] tile, and then each computes
// O_c += P V_c for latent dims [256 c, 256 c + 256) (wgmma m64n128k16 x 2, P from shared memory,
// V = the tile's first 512 columns, MN-major). Each consumer keeps the row sums of its own keys;
// they meet at the end. Shared memory: Q 72 KB + 2 stages x 72 KB + P 8 KB (all 128-byte
// swizzled [rows][64 elements] column blocks, the wgmma layout) = 224 KB: one block per SM.
//
// Numerics as the prefill flash kernel: F32 scores and softmax (exp2 with scale * log2(e)
// folded in), P rounded to BF16 for P V, F32 O. With several splits, each writes its O
// normalized by its own sum and its log2-sum-exp in F32, and the combine kernel weighs them.
#include <algorithm>
#include <limits>

#include "kernels/device_utils.cuh"
#include "kernels/flash_mla_decode.cuh"
#include "kernels/launch.cuh"
#include "kernels/sm90_async.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kLora = kFlashDecodeLora, kDim = kFlashDecodeLora + kFlashDecodeRope;  // 576
constexpr int kHeads = 64;                  // query rows per block: the wgmma's M
constexpr int kKeys = kFlashDecodeTileKeys;  // keys per tile, 32 per consumer
constexpr int kColBlocks = kDim / 64;       // 9 column blocks of 64 dims
constexpr int kStages = 2;
constexpr int kThreads = 3 * 128;
constexpr int kQBytes = kHeads * kDim * 2, kKBytes = kKeys * kDim * 2, kPBytes = kHeads * kKeys * 2;
constexpr int kRedBytes = 2 * kHeads * 4;   // per consumer, one float per row
constexpr int kBarBytes = 2 * kStages * 8;  // full and empty per stage
constexpr int kSmemBytes = 1024 + kQBytes + kStages * kKBytes + kPBytes + kRedBytes + kBarBytes;
static_assert(kSmemBytes <= 227 * 1024);

struct Smem {
  uint32_t q, stages, p, red, bars;
  __device__ uint32_t K(int st) const { return stages + st * kKBytes; }
  __device__ uint32_t Full(int st) const { return bars + 8 * st; }
  __device__ uint32_t Empty(int st) const { return bars + 8 * (kStages + st); }
  // The row value (maximum, then sum) consumer c publishes for row r.
  __device__ uint32_t Red(int c, int r) const { return red + 4 * (c * kHeads + r); }
};

#define FMD_D8(i)                                                                             \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define FMD_R16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define FMD_R64                                                                                 \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63"

// S [64, 32 keys] (+)= Q K^T over 16 of the 576 dims, both K-major in shared memory.
__device__ __forceinline__ void WgmmaS(float (&d)[16], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 " FMD_R16
      "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : FMD_D8(0), FMD_D8(8)
      : "l"(a), "l"(b), "r"(accumulate));
}
// O [64, 128 dims] += P [64, 16 keys] V [16 keys, 128 dims]: P K-major, V MN-major (transposed).
__device__ __forceinline__ void WgmmaPv(float (&d)[64], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.eq.b32 p, 1, 1;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " FMD_R64
      "}, %64, %65, p, 1, 1, 0, 1;\n}\n"
      : FMD_D8(0), FMD_D8(8), FMD_D8(16), FMD_D8(24), FMD_D8(32), FMD_D8(40), FMD_D8(48),
        FMD_D8(56)
      : "l"(a), "l"(b));
}
#undef FMD_D8
#undef FMD_R16
#undef FMD_R64

// Named barrier 1 over the two consumer warpgroups.
__device__ __forceinline__ void ConsumersSync() { asm volatile("bar.sync 1, 256;" ::: "memory"); }

__device__ __forceinline__ void StoreShared(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ void StoreShared(uint32_t addr, float v) {
  asm volatile("st.shared.f32 [%0], %1;" ::"r"(addr), "f"(v) : "memory");
}
__device__ __forceinline__ float LoadShared(uint32_t addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
  return v;
}

// The block's work: item, its 64 heads from head0, keys [key_begin, key_end).
struct Work {
  MlaGemmItem item;
  int head0, key_begin, key_end;
};

// Producer warpgroup: thread (r = tid / 8, c = tid % 8) copies 16-byte chunk c of each 128-byte
// row segment of rows r, r + 16, r + 32, r + 48; those rows share r % 8, hence one swizzled
// offset.
__device__ __forceinline__ void Produce(const FlashMlaDecodeParams& p, const Work& wk,
                                        const Smem& sm) {
  const int c = threadIdx.x % 8, r = threadIdx.x / 8;
  const uint32_t swz = static_cast<uint32_t>(r * 128 + ((c ^ (r & 7)) << 4));
  // Q rows: [q_lat | q_pe] of head head0 + row; zeros past the heads (outputs dropped).
#pragma unroll
  for (int i = 0; i < kHeads / 16; ++i) {
    const int h = wk.head0 + r + 16 * i;
    const bool valid = h < p.heads;
    const int64_t hh = valid ? h : 0;
    const bf16* lat = static_cast<const bf16*>(p.q_lat) + wk.item.token_row * p.q_lat_token_stride +
                      hh * p.q_lat_head_stride + c * 8;
    const bf16* pe = static_cast<const bf16*>(p.q_pe) + wk.item.token_row * p.q_pe_token_stride +
                     hh * p.q_pe_head_stride + c * 8;
#pragma unroll
    for (int b = 0; b < kColBlocks; ++b) {
      CpAsync16(sm.q + b * kHeads * 128 + 16 * i * 128 + swz, b < kColBlocks - 1 ? lat + b * 64 : pe,
                valid ? 16 : 0);
    }
  }
  const bf16* cache = static_cast<const bf16*>(p.cache) + c * 8;
  const int32_t* table = p.block_tables + wk.item.table_offset;
  const int tiles = (wk.key_end - wk.key_begin + kKeys - 1) / kKeys;
  for (int j = 0, st = 0; j < tiles; ++j, st = st + 1 == kStages ? 0 : st + 1) {
    if (j >= kStages) MbarWait(sm.Empty(st), (j / kStages + 1) & 1);  // the consumers' release
#pragma unroll
    for (int i = 0; i < kKeys / 16; ++i) {
      const int key = wk.key_begin + j * kKeys + r + 16 * i;
      const bool valid = key < wk.key_end;
      const int k = valid ? key : wk.key_begin;
      const int64_t row = static_cast<int64_t>(table[k / p.block_size]) * p.block_size +
                          k % p.block_size;
      const bf16* src = cache + row * kDim;
      const uint32_t dst = sm.K(st) + 16 * i * 128 + swz;
#pragma unroll
      for (int b = 0; b < kColBlocks; ++b) {
        CpAsync16(dst + b * kKeys * 128, src + b * 64, valid ? 16 : 0);
      }
    }
    CpAsyncArrive(sm.Full(st));  // tile 0's also covers Q
  }
  asm volatile("cp.async.wait_all;" ::: "memory");
}

// Consumer c (0, 1): thread (warp w of the warpgroup, lane = 4 g + t) holds rows 16 w + g and
// 16 w + g + 8 at columns 8 n + 2 t, + 1 of each 8-column slice n (the wgmma accumulator
// layout): S slice n (keys 32 c + 8 n ...) in s[4 n, + 4), O dims 256 c + 8 n ... in o_lo (n <
// 16) and 256 c + 128 + 8 n ... in o_hi.
struct Consumer {
  float s[16];
  float o_lo[64], o_hi[64];
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  float scale_log2;
  int c, row0;  // row0: 16 w + g; the thread's other row is row0 + 8

  __device__ __forceinline__ void Tile(const Smem& sm, int st, int key0, int key_end) {
    const int t = threadIdx.x % 4, lane = threadIdx.x % 32;
    const uint32_t k = sm.K(st);
    FenceRegs(s);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk) {
      // Dims [16 kk, + 16): column block kk / 4, 32 bytes into its 128-byte rows.
      const uint32_t col = (kk / 4) * 8192 + (kk % 4) * 32;  // 8192: a [64][128 B] block
      WgmmaS(s, WgmmaDesc(sm.q + col, 16, 1024), WgmmaDesc(k + col + 32 * c * 128, 16, 1024),
             kk > 0);
    }
    WgmmaCommit();
    WgmmaWait<0>();
    FenceRegs(s);
    // Keys past the range (the last tile's tail) get probability 0.
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const int key = key0 + 32 * c + 8 * n + 2 * t;
      if (key >= key_end) s[4 * n] = s[4 * n + 2] = -INFINITY;
      if (key + 1 >= key_end) s[4 * n + 1] = s[4 * n + 3] = -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
      mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    mx0 = QuadMax(mx0);
    mx1 = QuadMax(mx1);
    if (t == 0) {
      StoreShared(sm.Red(c, row0), mx0);
      StoreShared(sm.Red(c, row0 + 8), mx1);
    }
    ConsumersSync();  // both halves' maxima published; the other's P V of the last tile done
    // The tile has a key in range, so at least one half's maximum is finite.
    mx0 = fmaxf(fmaxf(mx0, LoadShared(sm.Red(1 - c, row0))), m0);
    mx1 = fmaxf(fmaxf(mx1, LoadShared(sm.Red(1 - c, row0 + 8))), m1);
    const float alpha0 = Exp2((m0 - mx0) * scale_log2), alpha1 = Exp2((m1 - mx1) * scale_log2);
    m0 = mx0;
    m1 = mx1;
    const float b0 = mx0 * scale_log2, b1 = mx1 * scale_log2;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const float p0 = Exp2(fmaf(s[4 * n], scale_log2, -b0));
      const float p1 = Exp2(fmaf(s[4 * n + 1], scale_log2, -b0));
      const float p2 = Exp2(fmaf(s[4 * n + 2], scale_log2, -b1));
      const float p3 = Exp2(fmaf(s[4 * n + 3], scale_log2, -b1));
      sum0 += p0 + p1;
      sum1 += p2 + p3;
      // P [64 rows][64 keys]: one 128-byte row per head, 16-byte chunk (4 c + n) swizzled.
      const int chunk = 4 * c + n;
      StoreShared(sm.p + row0 * 128 + ((chunk ^ (row0 & 7)) << 4) + 4 * t, PackBf16(p0, p1));
      StoreShared(sm.p + (row0 + 8) * 128 + ((chunk ^ ((row0 + 8) & 7)) << 4) + 4 * t,
                  PackBf16(p2, p3));
    }
    l0 = l0 * alpha0 + sum0;
    l1 = l1 * alpha1 + sum1;
    // The generic-proxy writes of P, before wgmma reads them through the async proxy.
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    ConsumersSync();  // P complete
#pragma unroll
    for (int i = 0; i < 64; i += 4) {
      o_lo[i] *= alpha0;
      o_lo[i + 1] *= alpha0;
      o_lo[i + 2] *= alpha1;
      o_lo[i + 3] *= alpha1;
      o_hi[i] *= alpha0;
      o_hi[i + 1] *= alpha0;
      o_hi[i + 2] *= alpha1;
      o_hi[i + 3] *= alpha1;
    }
    FenceRegs(o_lo);
    FenceRegs(o_hi);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint64_t a = WgmmaDesc(sm.p + kk * 32, 16, 1024);
      // V rows [16 kk, + 16) of column blocks 4 c, 4 c + 1 (o_lo) and 4 c + 2, 4 c + 3 (o_hi).
      WgmmaPv(o_lo, a, WgmmaDesc(k + (4 * c) * 8192 + kk * 16 * 128, 8192, 1024));
      WgmmaPv(o_hi, a, WgmmaDesc(k + (4 * c + 2) * 8192 + kk * 16 * 128, 8192, 1024));
    }
    WgmmaCommit();
    WgmmaWait<0>();
    FenceRegs(o_lo);
    FenceRegs(o_hi);
    if (lane == 0) MbarArrive(sm.Empty(st));
  }
};

// Each split's output normalized by its own sum, and its log2-sum-exp of scaled scores.
__device__ __forceinline__ float* PartialO(const FlashMlaDecodeParams& p, int item, int split,
                                           int h) {
  return p.partial + ((static_cast<int64_t>(item) * p.split.splits + split) * p.heads + h) * kLora;
}
__device__ __forceinline__ float* PartialLse(const FlashMlaDecodeParams& p, int item, int split,
                                             int h) {
  return p.partial + static_cast<int64_t>(p.num_items) * p.split.splits * p.heads * kLora +
         (static_cast<int64_t>(item) * p.split.splits + split) * p.heads + h;
}

__global__ void __launch_bounds__(kThreads, 1) FlashMlaDecodeKernel(const FlashMlaDecodeParams p) {
  KernelPrologue();
  extern __shared__ unsigned char smem_raw[];
  const int split = blockIdx.x, item_index = blockIdx.z;
  Work wk;
  wk.item = p.items[item_index];
  wk.head0 = blockIdx.y * kHeads;
  wk.key_begin = split * p.split.split_keys;
  wk.key_end = min(wk.item.context, wk.key_begin + p.split.split_keys);
  if (wk.key_begin >= wk.key_end) {  // a short item's empty split: weight 0 in the combine
    for (int r = threadIdx.x; r < kHeads; r += blockDim.x) {
      if (wk.head0 + r < p.heads) {
        *PartialLse(p, item_index, split, wk.head0 + r) = -INFINITY;
      }
    }
    return;
  }
  // The 128-byte swizzle repeats every 1024 bytes: tiles start 1024-byte aligned.
  const uint32_t base = (SmemAddr(smem_raw) + 1023) & ~1023u;
  Smem sm;
  sm.q = base;
  sm.stages = base + kQBytes;
  sm.p = sm.stages + kStages * kKBytes;
  sm.red = sm.p + kPBytes;
  sm.bars = sm.red + kRedBytes;
  if (threadIdx.x == 0) {
    for (int st = 0; st < kStages; ++st) {
      MbarInit(sm.Full(st), 128);  // every producer thread's cp.async arrival
      MbarInit(sm.Empty(st), 8);   // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    Produce(p, wk, sm);
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  Consumer cs;
  cs.c = wg - 1;
  cs.row0 = 16 * ((threadIdx.x / 32) % 4) + (threadIdx.x % 32) / 4;
  cs.scale_log2 = p.scale * 1.4426950408889634f;
#pragma unroll
  for (int i = 0; i < 64; ++i) cs.o_lo[i] = cs.o_hi[i] = 0.0f;
  const int tiles = (wk.key_end - wk.key_begin + kKeys - 1) / kKeys;
  for (int j = 0, st = 0; j < tiles; ++j, st = st + 1 == kStages ? 0 : st + 1) {
    MbarWait(sm.Full(st), (j / kStages) & 1);
    // cp.async wrote the tile through the generic proxy; wgmma reads through the async one.
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    cs.Tile(sm, st, wk.key_begin + j * kKeys, wk.key_end);
  }

  // Row sums: each consumer summed its own keys.
  const int t = threadIdx.x % 4;
  const float part0 = QuadSum(cs.l0), part1 = QuadSum(cs.l1);
  // The other consumer read the last maxima before the last "P complete" barrier.
  if (t == 0) {
    StoreShared(sm.Red(cs.c, cs.row0), part0);
    StoreShared(sm.Red(cs.c, cs.row0 + 8), part1);
  }
  ConsumersSync();
  const float l0 = part0 + LoadShared(sm.Red(1 - cs.c, cs.row0));
  const float l1 = part1 + LoadShared(sm.Red(1 - cs.c, cs.row0 + 8));
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  const int h0 = wk.head0 + cs.row0, h1 = h0 + 8;
  const int dim0 = 256 * cs.c + 2 * t;
  if (p.split.splits == 1) {
    bf16* out = static_cast<bf16*>(p.out) + wk.item.token_row * p.out_token_stride + dim0;
#pragma unroll
    for (int n = 0; n < 16; ++n) {
      if (h0 < p.heads) {
        bf16* o = out + h0 * p.out_head_stride + 8 * n;
        *reinterpret_cast<uint32_t*>(o) = PackBf16(cs.o_lo[4 * n] * inv0, cs.o_lo[4 * n + 1] * inv0);
        *reinterpret_cast<uint32_t*>(o + 128) =
            PackBf16(cs.o_hi[4 * n] * inv0, cs.o_hi[4 * n + 1] * inv0);
      }
      if (h1 < p.heads) {
        bf16* o = out + h1 * p.out_head_stride + 8 * n;
        *reinterpret_cast<uint32_t*>(o) =
            PackBf16(cs.o_lo[4 * n + 2] * inv1, cs.o_lo[4 * n + 3] * inv1);
        *reinterpret_cast<uint32_t*>(o + 128) =
            PackBf16(cs.o_hi[4 * n + 2] * inv1, cs.o_hi[4 * n + 3] * inv1);
      }
    }
    return;
  }
#pragma unroll
  for (int n = 0; n < 16; ++n) {
    if (h0 < p.heads) {
      float* o = PartialO(p, item_index, split, h0) + dim0 + 8 * n;
      *reinterpret_cast<float2*>(o) = make_float2(cs.o_lo[4 * n] * inv0, cs.o_lo[4 * n + 1] * inv0);
      *reinterpret_cast<float2*>(o + 128) =
          make_float2(cs.o_hi[4 * n] * inv0, cs.o_hi[4 * n + 1] * inv0);
    }
    if (h1 < p.heads) {
      float* o = PartialO(p, item_index, split, h1) + dim0 + 8 * n;
      *reinterpret_cast<float2*>(o) =
          make_float2(cs.o_lo[4 * n + 2] * inv1, cs.o_lo[4 * n + 3] * inv1);
      *reinterpret_cast<float2*>(o + 128) =
          make_float2(cs.o_hi[4 * n + 2] * inv1, cs.o_hi[4 * n + 3] * inv1);
    }
  }
  if (cs.c == 0 && t == 0) {
    if (h0 < p.heads) *PartialLse(p, item_index, split, h0) = cs.m0 * cs.scale_log2 + __log2f(l0);
    if (h1 < p.heads) *PartialLse(p, item_index, split, h1) = cs.m1 * cs.scale_log2 + __log2f(l1);
  }
}

// Block (head, item), 128 threads x 4 dims: out = sum_s w_s o_s / sum_s w_s with
// w_s = 2^(lse_s - max lse); empty splits (lse -inf) weigh nothing. The weights are found by
// all threads together and each thread's loads over the splits are independent, so the block
// waits about one memory latency per 8 splits rather than two per split.
constexpr int kMaxSplits = 256;
__global__ void __launch_bounds__(128) FlashMlaDecodeCombineKernel(const FlashMlaDecodeParams p) {
  KernelPrologue();
  __shared__ float weight[kMaxSplits];
  __shared__ float warp_value[4];
  const int h = blockIdx.x, item_index = blockIdx.y;
  const int splits = p.split.splits, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += blockDim.x) {
    weight[s] = *PartialLse(p, item_index, s, h);
    mx = fmaxf(mx, weight[s]);
  }
  mx = WarpMax(mx);
  if (lane == 0) warp_value[warp] = mx;
  __syncthreads();
  mx = fmaxf(fmaxf(warp_value[0], warp_value[1]), fmaxf(warp_value[2], warp_value[3]));
  // Every thread wrote its own weight slots above and rewrites only those here.
  for (int s = threadIdx.x; s < splits; s += blockDim.x) {
    weight[s] = weight[s] == -INFINITY ? 0.0f : exp2f(weight[s] - mx);
  }
  __syncthreads();
  float acc[4] = {}, total = 0.0f;
  const int d = 4 * threadIdx.x;
  const float* o = PartialO(p, item_index, 0, h) + d;
  const int64_t split_stride = static_cast<int64_t>(p.heads) * kLora;
#pragma unroll 8
  for (int s = 0; s < splits; ++s) {
    const float w = weight[s];
    const float4 v = *reinterpret_cast<const float4*>(o + s * split_stride);
    total += w;
    // An empty split's output was never written: skip it rather than multiply it by 0.
    if (w == 0.0f) continue;
    acc[0] = fmaf(w, v.x, acc[0]);
    acc[1] = fmaf(w, v.y, acc[1]);
    acc[2] = fmaf(w, v.z, acc[2]);
    acc[3] = fmaf(w, v.w, acc[3]);
  }
  const float inv = 1.0f / total;
  const MlaGemmItem item = p.items[item_index];
  bf16* out = static_cast<bf16*>(p.out) + item.token_row * p.out_token_stride +
              h * p.out_head_stride + d;
  reinterpret_cast<uint32_t*>(out)[0] = PackBf16(acc[0] * inv, acc[1] * inv);
  reinterpret_cast<uint32_t*>(out)[1] = PackBf16(acc[2] * inv, acc[3] * inv);
}

}  // namespace

FlashMlaDecodeSplit FlashMlaDecodeSplits(int64_t items, int64_t heads, int64_t max_context,
                                         int sms) {
  const int64_t tiles = std::max<int64_t>(1, (max_context + kKeys - 1) / kKeys);
  const int64_t groups = items * ((heads + kHeads - 1) / kHeads);
  FlashMlaDecodeSplit best;
  int64_t best_cost = std::numeric_limits<int64_t>::max();
  for (int64_t s = 1; s <= std::min<int64_t>(tiles, kMaxSplits); ++s) {
    const int64_t per = (tiles + s - 1) / s;
    if ((tiles + per - 1) / per != s) continue;  // an equal count of tiles with fewer splits
    const int64_t waves = (groups * s + sms - 1) / sms;
    const int64_t cost = waves * (per + (s > 1 ? 4 : 1));
    if (cost < best_cost) {
      best_cost = cost;
      best = {static_cast<int32_t>(s), static_cast<int32_t>(per * kKeys)};
    }
  }
  return best;
}

int64_t FlashMlaDecodePartialFloats(int64_t items, int64_t heads, FlashMlaDecodeSplit split) {
  return split.splits > 1 ? items * split.splits * heads * (kLora + 1) : 0;
}

void FlashMlaDecode(const FlashMlaDecodeParams& p, cudaStream_t stream) {
  if (p.num_items == 0 || p.heads == 0) return;
  // Per launch rather than once: the attribute belongs to the current device.
  DSV3_CUDA_CHECK(cudaFuncSetAttribute(FlashMlaDecodeKernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const dim3 grid(static_cast<unsigned>(p.split.splits),
                  static_cast<unsigned>((p.heads + kHeads - 1) / kHeads),
                  static_cast<unsigned>(p.num_items));
  Launch(FlashMlaDecodeKernel, grid, kThreads, kSmemBytes, stream, p);
  if (p.split.splits > 1) {
    Launch(FlashMlaDecodeCombineKernel,
           dim3(static_cast<unsigned>(p.heads), static_cast<unsigned>(p.num_items)), kLora / 4, 0,
           stream, p);
  }
}

}  // namespace dsv3::kernels
