// MLA decode attention in the absorbed form (SPEC section 3) on tensor cores, one pass over the
// latent cache per group of 64 heads: for an item (one new token over its cached prefix),
// score(h, j) = (q_lat_h . c_j + q_pe_h . k_pe_j) * scale over the item's keys j, an F32 online
// softmax, and o_lat_h = sum_j p(h, j) c_j with the probabilities rounded to BF16 for the
// weighted sum (as FlashAttention does). Scores never leave the chip; long contexts are split
// over blocks whose partial outputs a combine kernel merges. Only kv_lora_rank 512 and rope 64
// (DeepSeek-V2/V3, Kimi-K2).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/attention_gemm.cuh"

namespace dsv3::kernels {

constexpr int64_t kFlashDecodeLora = 512, kFlashDecodeRope = 64;
// Keys per tile: the unit the launch's parts are cut in.
constexpr int32_t kFlashDecodeTileKeys = 64;
__host__ __device__ constexpr int32_t FlashDecodeTiles(int32_t context) {
  return (context + kFlashDecodeTileKeys - 1) / kFlashDecodeTileKeys;
}

// How a launch divides the work (FlashMLA's tile scheduler): the items' tiles, item after item
// (MlaGemmItem::tile_begin: the tiles of the items before it), form one sequence of `total`
// tiles, cut into `parts` equal ranges (part q: tiles [total q / parts, total (q + 1) / parts)).
// A block takes one part for one group of 64 heads, item by item: an item that a cut splits
// gets a partial output per part that holds some of it, merged afterwards; every other item is
// written whole. Equal ranges keep every SM equally busy at any batch and mix of contexts,
// where splitting each item into the same number of ranges left SMs idle (128 of 132 blocks at
// 32 items of 2 head groups) or ran short blocks in a second wave.
// The parts for `items` items of `heads` heads attending at most `max_context` keys on a GPU of
// `sms` multiprocessors (one block per SM fits): least time by a model counting waves of blocks
// times each block's tiles plus its fixed costs in tiles: a query load per item it holds (1)
// and, when a cut may split an item, the partial output [64, 512] F32 written and read back (3).
int32_t FlashMlaDecodeParts(int64_t items, int64_t heads, int64_t max_context, int sms);
// The most parts a launch takes.
constexpr int32_t kFlashDecodeMaxParts = 256;
// Floats of the partial-output scratch `parts` parts need (0 for one part).
int64_t FlashMlaDecodePartialFloats(int64_t heads, int32_t parts);
// items[i].tile_begin for every item (host): the sum of FlashDecodeTiles over items [0, i).
void AssignFlashDecodeTiles(MlaGemmItem* items, int64_t count);

// That scratch, F32, two slots per part: a piece of a split item in part q goes to slot 2 q + 1
// when it reaches the part's end, else to slot 2 q (then it is the part's first piece, of an
// item begun in an earlier part). Each slot: o [slots][heads][512], the piece's output
// normalized by its own sum, then lse [slots][heads], its log2-sum-exp of scaled scores. Merged
// by MergeSplits (flash_mla_combine.cuh), which finds an item's slots from the items alone.
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
  int32_t parts = 1;
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
