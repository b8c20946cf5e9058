// MLA decode attention in the absorbed form (SPEC section 3) on tensor cores, one pass over the
// latent cache per group of 64 heads: for an item (one new token over its cached prefix),
// score(h, j) = (q_lat_h . c_j + q_pe_h . k_pe_j) * scale over the item's keys j, an F32 online
// softmax, and o_lat_h = sum_j p(h, j) c_j with the probabilities rounded to BF16 for the
// weighted sum (as FlashAttention does). Scores never leave the chip. The launch's keys are cut
// into equal parts, one block each per group of 64 heads (kernels/flash_mla_cut.h); the pieces
// of items a cut splits are merged by a combine kernel. Only kv_lora_rank 512 and rope 64
// (DeepSeek-V2/V3, Kimi-K2).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/attention_gemm.cuh"
#include "kernels/flash_mla_cut.h"

namespace dsv3::kernels {

constexpr int64_t kFlashDecodeLora = 512, kFlashDecodeRope = 64;
// Floats of the partial-output scratch `parts` parts need (0 for one part).
int64_t FlashMlaDecodePartialFloats(int64_t heads, int32_t parts);
// items[i].tile_begin for every item (host): the sum of FlashDecodeTiles over items [0, i).
void AssignFlashDecodeTiles(MlaGemmItem* items, int64_t count);
// Where an item's tiles end in the launch's sequence of tiles (its tile_begin set).
__host__ __device__ inline int32_t FlashTileEnd(const MlaGemmItem& item) {
  return item.tile_begin + FlashDecodeTiles(item.context);
}

// That scratch, F32, two slots per part (FlashCut::PieceSlot), each the output of a piece of a
// split item normalized by its own sum: o [slots][heads][512], then lse [slots][heads], its
// log2-sum-exp of scaled scores. Merged by MergeSplits (flash_mla_combine.cuh), which finds an
// item's slots from the items alone.
struct FlashSplitPartials {
  float* base = nullptr;
  const MlaGemmItem* items = nullptr;
  int32_t num_items = 0, parts = 0, heads = 0;
};

// q_lat [tokens, heads, 512] and q_pe [tokens, heads, 64] (rotated), with their token and head
// strides in elements; the paged latent cache [blocks, block_size, 576] ([c | k_pe] rows;
// cache_rows = blocks x block_size) with the concatenated block tables; items (device) name
// each token's row, table, context and tile_begin (AssignFlashDecodeTiles); out [tokens, heads,
// 512] at its strides. All BF16, every row 16-byte aligned. The items are read before the
// programmatic wait: they must not come from the kernel before. `partial`:
// FlashMlaDecodePartialFloats floats of scratch when parts > 1.
struct FlashMlaDecodeParams {
  const void* q_lat;
  int64_t q_lat_token_stride, q_lat_head_stride;
  const void* q_pe;
  int64_t q_pe_token_stride, q_pe_head_stride;
  const void* cache;
  int64_t cache_rows;
  int32_t block_size;
  const int32_t* block_tables;
  const MlaGemmItem* items;
  int32_t num_items, heads;
  float scale;
  int32_t parts = 1;  // or kFlashDecodePerItem: one block per item (and head group), no cut
  float* partial;
  void* out;
  int64_t out_token_stride, out_head_stride;
  // One item, parts > 1 only: every part writes its partial output, the item's whole one is
  // not written; the caller merges them (FlashSplitPartialsOf, MergeSplits) instead of a
  // combine kernel.
  bool defer_merge = false;
};
__host__ __device__ inline FlashSplitPartials FlashSplitPartialsOf(
    const FlashMlaDecodeParams& p) {
  return {p.partial, p.items, p.num_items, p.parts, p.heads};
}
void FlashMlaDecode(const FlashMlaDecodeParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
