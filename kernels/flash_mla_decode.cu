// Absorbed-form MLA decode for Hopper (sm_90a wgmma, warp-specialized), FlashMLA's shape of the
// problem: every head of a group reads the same latent rows, so a block takes 64 heads as the MMA's
// M and one pass over its keys serves them all.
//
// Block (head group of 64, part), 384 threads: the part's pieces of items (flash_mla_cut.h),
// one after another. Warpgroup 0 is the producer: it gathers each piece's query [64 heads, 576]
// (cp.async, its "q full" mbarrier, once the consumers have released the last piece's on "q empty")
// and its paged latent rows in 64-key tiles [64, 576] into two shared-memory stages, each in two
// parts with their own "full" and "empty" mbarriers: lo = column blocks 0-3 (the latent dims [0,
// 256)) and hi = blocks 4-8 (dims [256, 512) and the rope dims). Where the cache's pages hold whole
// tiles (block_size a multiple of 64), a tile whose keys are all in range comes by TMA (one thread
// issues a part's 4 or 5 boxes of [64 rows][64 dims]; the copy engine applies the swizzle), since
// one SM's cp.async do not keep enough bytes in flight; the last, partial tile of a range and other
// page sizes by cp.async through the block table, zeros past the context.
//
// Warpgroups 1 and 2 are the consumers L and R; L holds O's dims [0, 256) and R dims [256, 512) in
// registers (128 F32 per thread each). They take the tiles in pairs (A in stage 0, B in stage 1) on
// FlashMLA's "seesaw" schedule, so that one's softmax runs under the other's GEMMs:
//   L: S_A = Q K_A^T (wgmma m64n64k16, Q and K from shared memory); m_A = max(m, rowmax S_A);
//      publishes m_A; P_A = exp(S_A - m_A); O_L = O_L e^(m - m_A) + P_A V_A[L] (P_A from
//      registers); releases A's lo part.
//   R: S_B = Q K_B^T meanwhile; with m_A, m_B = max(m_A, rowmax S_B); publishes m_B;
//      P_B = exp(S_B - m_B), into shared memory; O_R = O_R e^(m - m_B) + P_B V_B[R].
//   L: P_A e^(m_A - m_B) into A's spent rope block; O_L = O_L e^(m_A - m_B) + P_B V_B[L]
//      (P_B from shared memory); releases B's lo part.
//   R: O_R += P_A e^(m_A - m_B) V_A[R] (from shared memory); releases A's and B's hi parts.
// A piece's odd last tile is an A without a B (m_B = m_A). Each consumer keeps the row sums of its
// own tiles; they meet at the piece's end. L takes A's lo part first and R B's hi part first: the
// parts released first. Shared memory: Q 72 KB + 2 stages x 72 KB + P_B 8 KB (all 128-byte swizzled
// [rows][64 elements] column blocks, the wgmma layout) = 224 KB: one block per SM.
//
// Numerics as the prefill flash kernel: F32 scores and softmax (exp2 with scale * log2(e) folded
// in), P rounded to BF16 for P V, F32 O. An item split over parts gets from each its O normalized
// by its own sum and its log2-sum-exp in F32, and the combine kernel weighs them.
#include <algorithm>
#include <cassert>

#include "kernels/device_utils.cuh"
#include "kernels/flash_mla_combine.cuh"
#include "kernels/flash_mla_decode.cuh"
#include "kernels/launch.cuh"
#include "kernels/sm90_async.cuh"
#include "kernels/tensor_map.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kLora = kFlashDecodeLora, kDim = kFlashDecodeLora + kFlashDecodeRope;  // 576
constexpr int kHeads = 64;                   // query rows per block: the wgmma's M
constexpr int kKeys = kFlashDecodeTileKeys;  // keys per tile
constexpr int kColBlocks = kDim / 64;        // 9 column blocks of 64 dims
constexpr int kLoBlocks = 4;                 // a stage's lo part: blocks [0, 4); hi: [4, 9)
constexpr int kThreads = 3 * 128;
constexpr int kBlockBytes = kKeys * 128;     // one column block [64 rows][64 elements]
constexpr int kQBytes = kColBlocks * kBlockBytes, kKBytes = kColBlocks * kBlockBytes;
constexpr int kPBytes = kBlockBytes;
constexpr int kRowBytes = 2 * kHeads * 4;    // two floats per row: m_A, m_B (then the sums)
// Full and empty x lo and hi x 2 stages; q full, q empty.
constexpr int kBarBytes = (2 * 2 * 2 + 2) * 8;
constexpr int kSmemBytes = 1024 + kQBytes + 2 * kKBytes + kPBytes + kRowBytes + kBarBytes;
static_assert(kSmemBytes <= 227 * 1024);

// Named barriers between the consumers (0 is __syncthreads): both wait at kBothConsumers; at the
// others one consumer arrives and the other waits.
enum ConsumerBarrier : int { kBothConsumers = 1, kMaxAReady, kMaxBReady, kPaReady, kPbReady };
__device__ __forceinline__ void NamedSync(int id) {
  asm volatile("bar.sync %0, 256;" ::"r"(id) : "memory");
}
__device__ __forceinline__ void NamedArrive(int id) {
  asm volatile("bar.arrive %0, 256;" ::"r"(id) : "memory");
}

struct Smem {
  uint32_t q, stages, p_b, rows, bars;
  __device__ uint32_t K(int st) const { return stages + st * kKBytes; }
  // Stage 0's rope block, spent once S_A is done: P_A for R.
  __device__ uint32_t Pa() const { return K(0) + (kColBlocks - 1) * kBlockBytes; }
  __device__ uint32_t Full(int st, int hi) const { return bars + 8 * (2 * st + hi); }
  __device__ uint32_t Empty(int st, int hi) const { return bars + 8 * (4 + 2 * st + hi); }
  __device__ uint32_t QFull() const { return bars + 8 * 8; }
  __device__ uint32_t QEmpty() const { return bars + 9 * 8; }
  // Per row r: m_A (which = 0) and m_B (1), published by L and R; at the end the row sums.
  __device__ uint32_t Row(int which, int r) const { return rows + 4 * (which * kHeads + r); }
};

// S [64, 64 keys] (+)= Q K^T over 16 of the 576 dims, both K-major in shared memory.
__device__ __forceinline__ void WgmmaS(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " DSV3_WGMMA_R32
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : DSV3_WGMMA_D8(0), DSV3_WGMMA_D8(8), DSV3_WGMMA_D8(16), DSV3_WGMMA_D8(24)
      : "l"(a), "l"(b), "r"(accumulate));
}
// O [64, 128 dims] += P [64, 16 keys] V [16 keys, 128 dims]: P K-major in shared memory, V
// MN-major (transposed).
__device__ __forceinline__ void WgmmaPv(float (&d)[64], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.eq.b32 p, 1, 1;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DSV3_WGMMA_R64
      "}, %64, %65, p, 1, 1, 0, 1;\n}\n"
      : DSV3_WGMMA_D8(0), DSV3_WGMMA_D8(8), DSV3_WGMMA_D8(16), DSV3_WGMMA_D8(24),
        DSV3_WGMMA_D8(32), DSV3_WGMMA_D8(40), DSV3_WGMMA_D8(48), DSV3_WGMMA_D8(56)
      : "l"(a), "l"(b));
}

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
// Generic-proxy shared-memory writes (cp.async's, the P stores) before wgmma reads them through
// the async proxy.
__device__ __forceinline__ void FenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// One piece of the block's part: item, its 64 heads from head0, keys [key_begin, key_end), and
// where its output goes: the partials' slot, or -1 for out (the item is whole in the part).
struct Work {
  MlaGemmItem item;
  int head0, key_begin, key_end, slot;
  __device__ int Tiles() const { return (key_end - key_begin + kKeys - 1) / kKeys; }
};

// The pieces of part `part` of the cut for the head group from head0, item by item from the one
// holding the part's first tile. Every warp walks them itself (the items are few per part and
// come from L1 after the first warp's loads).
struct PartWalk {
  const FlashMlaDecodeParams& p;
  FlashCut cut;
  int part, head0;
  // Item i's piece into wk; false once the part holds no more. Launched per item, part `part`
  // is item `part` whole.
  __device__ __forceinline__ bool Piece(int i, Work& wk) const {
    if (i >= p.num_items || (p.parts == kFlashDecodePerItem && i != part)) return false;
    wk.item = p.items[i];
    const int32_t item_begin = wk.item.tile_begin;
    const int32_t item_end = FlashTileEnd(wk.item);
    FlashPiece piece{item_begin, item_end, -1};
    if (p.parts != kFlashDecodePerItem &&
        !PieceOfItem(cut, part, item_begin, item_end, p.defer_merge, piece)) {
      return false;
    }
    wk.head0 = head0;
    wk.key_begin = (piece.begin - item_begin) * kKeys;
    wk.key_end = min(wk.item.context, (piece.end - item_begin) * kKeys);
    wk.slot = piece.slot;
    return true;
  }
};

// Producer warpgroup: by cp.async, thread (r = tid / 8, c = tid % 8) copies 16-byte chunk c of
// each 128-byte row segment of rows r, r + 16, r + 32, r + 48; those rows share r % 8, hence one
// swizzled offset. A part's full barrier counts 128 arrivals: each thread's, after its cp.async
// or, for a TMA part, plain, thread 0's expecting the part's bytes.
struct Producer {
  const FlashMlaDecodeParams& p;
  const CUtensorMap& cache_map;
  const Smem& sm;
  int c = threadIdx.x % 8, r = threadIdx.x / 8;
  uint32_t swz = static_cast<uint32_t>(r * 128 + ((c ^ (r & 7)) << 4));

  // Q rows: [q_lat | q_pe] of head head0 + row; zeros past the heads (outputs dropped).
  __device__ __forceinline__ void LoadQ(const Work& wk) const {
#pragma unroll 1  // the producer has 40 registers: one row group at a time
    for (int i = 0; i < kHeads / 16; ++i) {
      const int h = wk.head0 + r + 16 * i;
      const bool valid = h < p.heads;
      const int64_t hh = valid ? h : 0;
      const bf16* lat = static_cast<const bf16*>(p.q_lat) +
                        wk.item.token_row * p.q_lat_token_stride + hh * p.q_lat_head_stride + c * 8;
      const bf16* pe = static_cast<const bf16*>(p.q_pe) + wk.item.token_row * p.q_pe_token_stride +
                       hh * p.q_pe_head_stride + c * 8;
#pragma unroll
      for (int b = 0; b < kColBlocks; ++b) {
        CpAsync16(sm.q + b * kBlockBytes + 16 * i * 128 + swz,
                  b < kColBlocks - 1 ? lat + b * 64 : pe, valid ? 16 : 0);
      }
    }
    CpAsyncArrive(sm.QFull());
  }
  // Column blocks [B0, B1) of tile j's latent rows into stage st, then the part's arrival.
  template <int B0, int B1>
  __device__ __forceinline__ void LoadPart(const Work& wk, int j, int st) const {
    const int32_t* table = p.block_tables + wk.item.table_offset;
    const uint32_t full = sm.Full(st, B0 == 0 ? 0 : 1);
    const int key0 = wk.key_begin + j * kKeys;
    if (p.block_size % kKeys == 0 && key0 + kKeys <= wk.key_end) {
      if (threadIdx.x == 0) {
        const int32_t row = table[key0 / p.block_size] * p.block_size + key0 % p.block_size;
        MbarExpectTx(full, (B1 - B0) * kBlockBytes);
#pragma unroll
        for (int b = B0; b < B1; ++b) {
          TmaLoad2d(sm.K(st) + b * kBlockBytes, cache_map, full, 64 * b, row);
        }
      } else {
        MbarArrive(full);
      }
      return;
    }
    const bf16* cache = static_cast<const bf16*>(p.cache) + c * 8;
#pragma unroll
    for (int i = 0; i < kKeys / 16; ++i) {
      const int key = wk.key_begin + j * kKeys + r + 16 * i;
      const bool valid = key < wk.key_end;
      const int k = valid ? key : wk.key_begin;
      const int64_t row =
          static_cast<int64_t>(table[k / p.block_size]) * p.block_size + k % p.block_size;
      const bf16* src = cache + row * kDim;
      const uint32_t dst = sm.K(st) + 16 * i * 128 + swz;
#pragma unroll
      for (int b = B0; b < B1; ++b) {
        CpAsync16(dst + b * kBlockBytes, src + b * 64, valid ? 16 : 0);
      }
    }
    CpAsyncArrive(full);
  }
  // Piece by piece, pair by pair, each part once the consumer that reads it last has released
  // it, in the order they are released: A's lo part (L, after P_A V_A[L]), B's hi part (R, after
  // P_B V_B[R]), A's hi part (R, after P_A V_A[R]), B's lo part (L, after P_B V_B[L]). A pair
  // without B (a piece's odd last tile) still completes B's barriers, with plain arrivals, so
  // that every pair moves every barrier one phase. A piece's query goes first, once the
  // consumers are done with the last one's ("q empty": after their last pair, when they also
  // release its stages).
  __device__ __forceinline__ void Run(const PartWalk& walk, int first_item) const {
    int pair = 0;
    Work wk;
    for (int i = first_item, n = 0; walk.Piece(i, wk); ++i, ++n) {
      const int tiles = wk.Tiles();
      if (n > 0) MbarWait(sm.QEmpty(), (n - 1) & 1);
      LoadQ(wk);
      for (int a = 0; a < tiles; a += 2, ++pair) {
        const bool has_b = a + 1 < tiles;
        const uint32_t released = (pair - 1) & 1;  // the phase the consumers completed
        if (pair > 0) MbarWait(sm.Empty(0, 0), released);
        LoadPart<0, kLoBlocks>(wk, a, 0);
        if (pair > 0) MbarWait(sm.Empty(1, 1), released);
        if (has_b) {
          LoadPart<kLoBlocks, kColBlocks>(wk, a + 1, 1);
        } else {
          MbarArrive(sm.Full(1, 1));
        }
        if (pair > 0) MbarWait(sm.Empty(0, 1), released);
        LoadPart<kLoBlocks, kColBlocks>(wk, a, 0);
        if (pair > 0) MbarWait(sm.Empty(1, 0), released);
        if (has_b) {
          LoadPart<0, kLoBlocks>(wk, a + 1, 1);
        } else {
          MbarArrive(sm.Full(1, 0));
        }
      }
    }
    asm volatile("cp.async.wait_all;" ::: "memory");
  }
};

// A consumer: thread (warp w of the warpgroup, lane = 4 g + t) holds rows row0 = 16 w + g and
// row0 + 8 at columns 8 n + 2 t, + 1 of each 8-column slice n (the wgmma accumulator layout):
// S slice n (the tile's keys 8 n ...) in s[4 n, + 4); O dims 256 c + 8 n ... in o_lo (n < 16)
// and 256 c + 128 + 8 n ... in o_hi, c = 0 for L and 1 for R.
struct Consumer {
  float s[32];
  float o_lo[64], o_hi[64];
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  float scale_log2;
  int c, row0, t;

  // S = Q K^T over column blocks [B0, B1) of stage st once the part holding them has landed.
  template <int B0, int B1>
  __device__ __forceinline__ void IssueS(const Smem& sm, int st, uint32_t phase, bool first) {
    MbarWait(sm.Full(st, B0 == 0 ? 0 : 1), phase);
    FenceProxyAsync();
    WgmmaFence();  // after the wait's loop, or ptxas serializes the wgmmas
#pragma unroll
    for (int b = B0; b < B1; ++b) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {  // 32 bytes (16 dims) into the blocks' 128-byte rows
        const uint32_t col = b * kBlockBytes + kk * 32;
        WgmmaS(s, WgmmaDesc(sm.q + col, 16, 1024), WgmmaDesc(sm.K(st) + col, 16, 1024),
               !(first && b == B0 && kk == 0));
      }
    }
  }
  // Scores of keys at or past key_end (the last tile's tail) to -inf; the row maxima of s.
  __device__ __forceinline__ void MaskedMax(int key0, int key_end, float& mx0, float& mx1) {
    mx0 = mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int key = key0 + 8 * n + 2 * t;
      if (key >= key_end) s[4 * n] = s[4 * n + 2] = -INFINITY;
      if (key + 1 >= key_end) s[4 * n + 1] = s[4 * n + 3] = -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
      mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    mx0 = QuadMax(mx0);
    mx1 = QuadMax(mx1);
  }
  // s = exp(S - max) in place; returns the thread's part of the row sums.
  __device__ __forceinline__ void Exponentiate(float mx0, float mx1, float& sum0, float& sum1) {
    const float b0 = mx0 * scale_log2, b1 = mx1 * scale_log2;
    sum0 = sum1 = 0.0f;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      s[4 * n] = Exp2(fmaf(s[4 * n], scale_log2, -b0));
      s[4 * n + 1] = Exp2(fmaf(s[4 * n + 1], scale_log2, -b0));
      s[4 * n + 2] = Exp2(fmaf(s[4 * n + 2], scale_log2, -b1));
      s[4 * n + 3] = Exp2(fmaf(s[4 * n + 3], scale_log2, -b1));
      sum0 += s[4 * n] + s[4 * n + 1];
      sum1 += s[4 * n + 2] + s[4 * n + 3];
    }
  }
  // P (s times f0 / f1 per row, to BF16) into shared [64 rows][64 keys] at p: one 128-byte row
  // per head, 16-byte chunk n swizzled.
  __device__ __forceinline__ void StoreP(uint32_t p, float f0, float f1) const {
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      StoreShared(p + row0 * 128 + ((n ^ (row0 & 7)) << 4) + 4 * t,
                  PackBf16(s[4 * n] * f0, s[4 * n + 1] * f0));
      StoreShared(p + (row0 + 8) * 128 + ((n ^ ((row0 + 8) & 7)) << 4) + 4 * t,
                  PackBf16(s[4 * n + 2] * f1, s[4 * n + 3] * f1));
    }
    FenceProxyAsync();
  }
  __device__ __forceinline__ void ScaleO(float f0, float f1) {
#pragma unroll
    for (int i = 0; i < 64; i += 4) {
      o_lo[i] *= f0;
      o_lo[i + 1] *= f0;
      o_lo[i + 2] *= f1;
      o_lo[i + 3] *= f1;
      o_hi[i] *= f0;
      o_hi[i + 1] *= f0;
      o_hi[i + 2] *= f1;
      o_hi[i + 3] *= f1;
    }
  }
  // Stage st's V rows of this consumer's dims: column blocks 4 c, 4 c + 1 (o_lo) and 4 c + 2,
  // 4 c + 3 (o_hi), keys [16 kk, + 16).
  __device__ __forceinline__ uint64_t V(const Smem& sm, int st, int half, int kk) const {
    return WgmmaDesc(sm.K(st) + (4 * c + 2 * half) * kBlockBytes + kk * 16 * 128, kBlockBytes,
                     1024);
  }
  // O += P V over stage st with P from s (registers).
  __device__ __forceinline__ void IssuePvLocal(const Smem& sm, int st) {
    uint32_t pa[kKeys / 16][4];
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      pa[kk][0] = PackBf16(s[8 * kk], s[8 * kk + 1]);
      pa[kk][1] = PackBf16(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = PackBf16(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = PackBf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
    FenceRegs(pa);
    FenceRegs(o_lo);
    FenceRegs(o_hi);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      WgmmaBf16RegA64x128x16(o_lo, pa[kk], V(sm, st, 0, kk));
      WgmmaBf16RegA64x128x16(o_hi, pa[kk], V(sm, st, 1, kk));
    }
    WgmmaCommit();
  }
  // O += P V over stage st with P from shared memory at p.
  __device__ __forceinline__ void IssuePvShared(const Smem& sm, int st, uint32_t p) {
    FenceRegs(o_lo);
    FenceRegs(o_hi);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint64_t a = WgmmaDesc(p + kk * 32, 16, 1024);
      WgmmaPv(o_lo, a, V(sm, st, 0, kk));
      WgmmaPv(o_hi, a, V(sm, st, 1, kk));
    }
    WgmmaCommit();
  }
  __device__ __forceinline__ void WaitO() {
    WgmmaWait<0>();
    FenceRegs(o_lo);
    FenceRegs(o_hi);
  }
  __device__ __forceinline__ void Release(uint32_t bar) const {
    if (threadIdx.x % 32 == 0) MbarArrive(bar);
  }

  // L's part of the pair (A = tile a in stage 0, B in stage 1 when has_b).
  __device__ __forceinline__ void PairL(const Smem& sm, int key0, int key_end, uint32_t phase,
                                        bool has_b) {
    FenceRegs(s);
    IssueS<0, kLoBlocks>(sm, 0, phase, true);
    IssueS<kLoBlocks, kColBlocks>(sm, 0, phase, false);
    WgmmaCommit();
    WgmmaWait<0>();
    FenceRegs(s);
    float ma0, ma1;
    MaskedMax(key0, key_end, ma0, ma1);
    ma0 = fmaxf(ma0, m0);  // the tile has a key in range: finite
    ma1 = fmaxf(ma1, m1);
    if (t == 0) {
      StoreShared(sm.Row(0, row0), ma0);
      StoreShared(sm.Row(0, row0 + 8), ma1);
    }
    NamedArrive(kMaxAReady);
    const float scale_a0 = Exp2((m0 - ma0) * scale_log2), scale_a1 = Exp2((m1 - ma1) * scale_log2);
    float sum0, sum1;
    Exponentiate(ma0, ma1, sum0, sum1);
    l0 = l0 * scale_a0 + sum0;
    l1 = l1 * scale_a1 + sum1;
    ScaleO(scale_a0, scale_a1);
    IssuePvLocal(sm, 0);
    WaitO();
    Release(sm.Empty(0, 0));
    NamedSync(kMaxBReady);
    const float mb0 = LoadShared(sm.Row(1, row0)), mb1 = LoadShared(sm.Row(1, row0 + 8));
    const float scale_b0 = Exp2((ma0 - mb0) * scale_log2);
    const float scale_b1 = Exp2((ma1 - mb1) * scale_log2);
    StoreP(sm.Pa(), scale_b0, scale_b1);
    NamedArrive(kPaReady);
    l0 *= scale_b0;
    l1 *= scale_b1;
    m0 = mb0;
    m1 = mb1;
    if (!has_b) {  // m_B = m_A: nothing to rescale; B's lo part completed empty
      MbarWait(sm.Full(1, 0), phase);
      Release(sm.Empty(1, 0));
      return;
    }
    ScaleO(scale_b0, scale_b1);
    NamedSync(kPbReady);
    MbarWait(sm.Full(1, 0), phase);  // B's lo part (V_B[L]); R's S_B waited for it too
    FenceProxyAsync();
    IssuePvShared(sm, 1, sm.p_b);
    WaitO();
    Release(sm.Empty(1, 0));
  }

  // R's part of the pair.
  __device__ __forceinline__ void PairR(const Smem& sm, int key0, int key_end, uint32_t phase,
                                        bool has_b) {
    float mx0 = -INFINITY, mx1 = -INFINITY;
    if (has_b) {
      FenceRegs(s);
      IssueS<kLoBlocks, kColBlocks>(sm, 1, phase, true);
      IssueS<0, kLoBlocks>(sm, 1, phase, false);
      WgmmaCommit();
      WgmmaWait<0>();
      FenceRegs(s);
      MaskedMax(key0, key_end, mx0, mx1);
    }
    NamedSync(kMaxAReady);
    const float ma0 = LoadShared(sm.Row(0, row0)), ma1 = LoadShared(sm.Row(0, row0 + 8));
    const float mb0 = fmaxf(ma0, mx0), mb1 = fmaxf(ma1, mx1);
    if (t == 0) {
      StoreShared(sm.Row(1, row0), mb0);
      StoreShared(sm.Row(1, row0 + 8), mb1);
    }
    NamedArrive(kMaxBReady);
    // O_R and the sums of R's tiles from m to m_A, then to m_B.
    const float scale0 = Exp2((m0 - ma0) * scale_log2) * Exp2((ma0 - mb0) * scale_log2);
    const float scale1 = Exp2((m1 - ma1) * scale_log2) * Exp2((ma1 - mb1) * scale_log2);
    l0 *= scale0;
    l1 *= scale1;
    ScaleO(scale0, scale1);
    m0 = mb0;
    m1 = mb1;
    if (has_b) {
      float sum0, sum1;
      Exponentiate(mb0, mb1, sum0, sum1);
      l0 += sum0;
      l1 += sum1;
      StoreP(sm.p_b, 1.0f, 1.0f);
      NamedArrive(kPbReady);
      IssuePvLocal(sm, 1);
    }
    NamedSync(kPaReady);
    MbarWait(sm.Full(0, 1), phase);  // A's hi part (V_A[R]); L's S_A waited for it too
    FenceProxyAsync();
    IssuePvShared(sm, 0, sm.Pa());
    if (has_b) {
      WgmmaWait<1>();
      Release(sm.Empty(1, 1));
    } else {  // B's hi part completed empty
      MbarWait(sm.Full(1, 1), phase);
      Release(sm.Empty(1, 1));
    }
    WaitO();
    Release(sm.Empty(0, 1));
  }

  // A piece starts: O, the maxima and the sums from zero.
  __device__ __forceinline__ void Begin() {
#pragma unroll
    for (int i = 0; i < 64; ++i) o_lo[i] = o_hi[i] = 0.0f;
    m0 = m1 = -INFINITY;
    l0 = l1 = 0.0f;
  }
  // A piece ends: each consumer summed its own tiles; the sums meet in the rows' shared floats
  // (the maxima there are no longer read: R read m_A before the last kMaxBReady, L m_B before
  // the last kPaReady), and both have read them before the next piece's maxima overwrite them.
  // Then O / l into out (slot -1) or the piece's slot of the partials.
  __device__ __forceinline__ void Finish(const FlashMlaDecodeParams& p, const Smem& sm,
                                         const Work& wk) const {
    const float part0 = QuadSum(l0), part1 = QuadSum(l1);
    if (t == 0) {
      StoreShared(sm.Row(c, row0), part0);
      StoreShared(sm.Row(c, row0 + 8), part1);
    }
    NamedSync(kBothConsumers);
    const float sum0 = part0 + LoadShared(sm.Row(1 - c, row0));
    const float sum1 = part1 + LoadShared(sm.Row(1 - c, row0 + 8));
    NamedSync(kBothConsumers);
    const float inv0 = 1.0f / sum0, inv1 = 1.0f / sum1;
    const int h0 = wk.head0 + row0, h1 = h0 + 8;
    const int dim0 = 256 * c + 2 * t;
    if (wk.slot < 0) {
      bf16* out = static_cast<bf16*>(p.out) + wk.item.token_row * p.out_token_stride + dim0;
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        if (h0 < p.heads) {
          bf16* o = out + h0 * p.out_head_stride + 8 * n;
          *reinterpret_cast<uint32_t*>(o) = PackBf16(o_lo[4 * n] * inv0, o_lo[4 * n + 1] * inv0);
          *reinterpret_cast<uint32_t*>(o + 128) =
              PackBf16(o_hi[4 * n] * inv0, o_hi[4 * n + 1] * inv0);
        }
        if (h1 < p.heads) {
          bf16* o = out + h1 * p.out_head_stride + 8 * n;
          *reinterpret_cast<uint32_t*>(o) =
              PackBf16(o_lo[4 * n + 2] * inv1, o_lo[4 * n + 3] * inv1);
          *reinterpret_cast<uint32_t*>(o + 128) =
              PackBf16(o_hi[4 * n + 2] * inv1, o_hi[4 * n + 3] * inv1);
        }
      }
      return;
    }
    const FlashSplitPartials partials = FlashSplitPartialsOf(p);
#pragma unroll
    for (int n = 0; n < 16; ++n) {
      if (h0 < p.heads) {
        float* o = SlotO(partials, wk.slot, h0) + dim0 + 8 * n;
        *reinterpret_cast<float2*>(o) = make_float2(o_lo[4 * n] * inv0, o_lo[4 * n + 1] * inv0);
        *reinterpret_cast<float2*>(o + 128) =
            make_float2(o_hi[4 * n] * inv0, o_hi[4 * n + 1] * inv0);
      }
      if (h1 < p.heads) {
        float* o = SlotO(partials, wk.slot, h1) + dim0 + 8 * n;
        *reinterpret_cast<float2*>(o) =
            make_float2(o_lo[4 * n + 2] * inv1, o_lo[4 * n + 3] * inv1);
        *reinterpret_cast<float2*>(o + 128) =
            make_float2(o_hi[4 * n + 2] * inv1, o_hi[4 * n + 3] * inv1);
      }
    }
    if (c == 0 && t == 0) {
      if (h0 < p.heads) *SlotLse(partials, wk.slot, h0) = m0 * scale_log2 + __log2f(sum0);
      if (h1 < p.heads) *SlotLse(partials, wk.slot, h1) = m1 * scale_log2 + __log2f(sum1);
    }
  }
};

// Block (head group, part q): the pieces of part q of the cut (PartWalk), one after another
// through the same stages and barriers.
__global__ void __launch_bounds__(kThreads, 1)
    FlashMlaDecodeKernel(const __grid_constant__ FlashMlaDecodeParams p,
                         const __grid_constant__ CUtensorMap cache_map) {
  extern __shared__ unsigned char smem_raw[];
  __shared__ int first_item;
  // The items came with the step's plan, before the step's first kernel: read before the wait,
  // while the kernel before finishes.
  const int part = blockIdx.y;
  const bool per_item = p.parts == kFlashDecodePerItem;
  const FlashCut cut = per_item ? FlashCut{1, 1} : CutOf(p.items, p.num_items, p.parts);
  if (part >= cut.parts && !per_item) return;  // more parts than tiles: this one holds none
  const PartWalk walk{p, cut, part, static_cast<int>(blockIdx.x) * kHeads};
  if (per_item) {
    first_item = part;
  } else {
    const int32_t begin = cut.Begin(part);
    for (int i = threadIdx.x; i < p.num_items; i += blockDim.x) {
      const MlaGemmItem it = p.items[i];
      if (it.tile_begin <= begin && begin < FlashTileEnd(it)) {
        first_item = i;
      }
    }
  }
  KernelPrologue();
  // The 128-byte swizzle repeats every 1024 bytes: tiles start 1024-byte aligned.
  const uint32_t base = (SmemAddr(smem_raw) + 1023) & ~1023u;
  Smem sm;
  sm.q = base;
  sm.stages = base + kQBytes;
  sm.p_b = sm.stages + 2 * kKBytes;
  sm.rows = sm.p_b + kPBytes;
  sm.bars = sm.rows + kRowBytes;
  if (threadIdx.x == 0) {
    for (int st = 0; st < 2; ++st) {
      for (int hi = 0; hi < 2; ++hi) {
        MbarInit(sm.Full(st, hi), 128);  // every producer thread's arrival
        MbarInit(sm.Empty(st, hi), 4);   // one arrival per warp of the consumer releasing it
      }
    }
    MbarInit(sm.QFull(), 128);
    MbarInit(sm.QEmpty(), 8);  // one arrival per consumer warp
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();  // also publishes first_item
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    Producer{p, cache_map, sm}.Run(walk, first_item);
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  Consumer cs;
  cs.c = wg - 1;
  cs.t = threadIdx.x % 4;
  cs.row0 = 16 * ((threadIdx.x / 32) % 4) + (threadIdx.x % 32) / 4;
  cs.scale_log2 = p.scale * 1.4426950408889634f;
  int pair = 0;
  Work wk;
  for (int i = first_item, n = 0; walk.Piece(i, wk); ++i, ++n) {
    cs.Begin();
    MbarWait(sm.QFull(), n & 1);
    const int tiles = wk.Tiles();
    for (int a = 0; a < tiles; a += 2, ++pair) {
      const bool has_b = a + 1 < tiles;
      const int key0 = wk.key_begin + a * kKeys;
      if (cs.c == 0) {
        cs.PairL(sm, key0, wk.key_end, pair & 1, has_b);
      } else {
        cs.PairR(sm, key0 + kKeys, wk.key_end, pair & 1, has_b);
      }
    }
    cs.Release(sm.QEmpty());  // this warp's S, which read Q, are done
    cs.Finish(p, sm, wk);
  }
}

// Block (head, item), kFlashCombineThreads threads x 4 dims: MergeSplits into out for an item
// the cut split; the kernel wrote the others whole.
__global__ void __launch_bounds__(kFlashCombineThreads)
    FlashMlaDecodeCombineKernel(const FlashMlaDecodeParams p) {
  __shared__ float weight[kFlashDecodeMaxParts];
  __shared__ int slot[kFlashDecodeMaxParts];
  __shared__ float warp_value[4];
  const int h = blockIdx.x, item_index = blockIdx.y;
  const FlashSplitPartials partials = FlashSplitPartialsOf(p);
  // The items are the step's plan: the pieces are known before the wait.
  const MlaGemmItem item = p.items[item_index];
  const int pieces = PlanMerge(partials, item_index, slot);
  KernelPrologue();
  if (pieces == 1) return;
  float merged[4];
  MergeSplits(partials, pieces, slot, h, weight, warp_value, merged);
  bf16* out = static_cast<bf16*>(p.out) + item.token_row * p.out_token_stride +
              h * p.out_head_stride + 4 * threadIdx.x;
  reinterpret_cast<uint32_t*>(out)[0] = PackBf16(merged[0], merged[1]);
  reinterpret_cast<uint32_t*>(out)[1] = PackBf16(merged[2], merged[3]);
}

}  // namespace

int64_t FlashMlaDecodePartialFloats(int64_t heads, int32_t parts) {
  return parts > 1 ? 2 * int64_t{parts} * heads * (kLora + 1) : 0;
}

void AssignFlashDecodeTiles(MlaGemmItem* items, int64_t count) {
  int32_t tiles = 0;
  for (int64_t i = 0; i < count; ++i) {
    items[i].tile_begin = tiles;
    tiles = FlashTileEnd(items[i]);
  }
}

void FlashMlaDecode(const FlashMlaDecodeParams& p, cudaStream_t stream) {
  if (p.num_items == 0 || p.heads == 0) return;
  // Per launch rather than once: the attribute belongs to the current device.
  DSV3_CUDA_CHECK(cudaFuncSetAttribute(FlashMlaDecodeKernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  assert(p.parts >= 0 && p.parts <= kFlashDecodeMaxParts &&
         (!p.defer_merge || (p.num_items == 1 && p.parts > 1)));
  // Head groups next to each other in launch order: the blocks reading the same keys start
  // together.
  const dim3 grid(static_cast<unsigned>((p.heads + kHeads - 1) / kHeads),
                  static_cast<unsigned>(p.parts == kFlashDecodePerItem ? p.num_items : p.parts));
  // The cache [rows, 576] in boxes of [64 rows][64 dims] (one column block of a tile); only
  // read where pages hold whole tiles.
  CUtensorMap cache_map{};
  if (p.block_size % kKeys == 0) {
    const cuuint64_t dims[2] = {kDim, static_cast<cuuint64_t>(p.cache_rows)};
    const cuuint64_t strides[1] = {kDim * 2};
    const cuuint32_t box[2] = {64, kKeys};
    cache_map = EncodeTensorMap(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, dims, strides, box,
                                const_cast<void*>(p.cache));
  }
  Launch(FlashMlaDecodeKernel, grid, kThreads, kSmemBytes, stream, p, cache_map);
  if (p.parts > 1 && !p.defer_merge) {
    Launch(FlashMlaDecodeCombineKernel,
           dim3(static_cast<unsigned>(p.heads), static_cast<unsigned>(p.num_items)),
           kFlashCombineThreads, 0, stream, p);
  }
}

}  // namespace dsv3::kernels
