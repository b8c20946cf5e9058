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

#include "kernels/flash_mla_combine.cuh"
#include "kernels/flash_mla_decode.cuh"
#include "kernels/flash_mla_decode_block.cuh"
#include "kernels/flash_mla_decode_consumer.cuh"
#include "kernels/launch.cuh"
#include "kernels/sm90_async.cuh"
#include "kernels/tensor_map.cuh"

namespace dsv3::kernels {

namespace {

using namespace flash_decode;  // the block's parts (flash_mla_decode_block.cuh, _consumer.cuh)

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
    TwoConsumerRegisters::Producer();
    Producer{p, cache_map, sm}.Run(walk, first_item);
    return;
  }
  TwoConsumerRegisters::Consumer();
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
