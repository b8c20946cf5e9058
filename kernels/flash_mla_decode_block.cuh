// The flash decode kernel's block (kernels/flash_mla_decode.cu, which describes the design):
// its shapes and shared-memory layout, the wgmma and shared-memory helpers its warpgroups share,
// the walk over its part's pieces (kernels/flash_mla_cut.h) and the producer warpgroup. Included
// by flash_mla_decode.cu and flash_mla_decode_consumer.cuh only.
#pragma once

#include <cstdint>

#include "kernels/device_utils.cuh"
#include "kernels/flash_mla_combine.cuh"
#include "kernels/flash_mla_decode.cuh"
#include "kernels/sm90_async.cuh"

namespace dsv3::kernels::flash_decode {

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

}  // namespace dsv3::kernels::flash_decode
