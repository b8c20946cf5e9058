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
// Keys per tile: the splits' unit.
constexpr int32_t kFlashDecodeTileKeys = 64;

// How the keys are split: every item's keys [0, context) go in `splits` ranges of `split_keys`
// (a multiple of kFlashDecodeTileKeys), the last ranges short or empty for short items.
struct FlashMlaDecodeSplit {
  int32_t splits = 1, split_keys = 0;
};
// The split for `items` items of `heads` heads attending at most `max_context` keys on a GPU of
// `sms` multiprocessors (one block per SM fits): least time by a model counting waves of blocks
// times each block's tiles plus its fixed cost in tiles: the query load (1) and, when split,
// the partial output [64, 512] F32 written and read back (3).
FlashMlaDecodeSplit FlashMlaDecodeSplits(int64_t items, int64_t heads, int64_t max_context,
                                         int sms);
// Floats of the partial-output scratch the split needs (0 for one split).
int64_t FlashMlaDecodePartialFloats(int64_t items, int64_t heads, FlashMlaDecodeSplit split);
// The most splits a launch takes.
constexpr int32_t kFlashDecodeMaxSplits = 256;

// That scratch, F32: o [items][splits][heads][512], each split's output normalized by its own
// sum, then lse [items][splits][heads], its log2-sum-exp of scaled scores (-inf for an empty
// split, whose o is never written). Merged by MergeSplits (flash_mla_combine.cuh).
struct FlashSplitPartials {
  float* base = nullptr;
  int32_t items = 0, splits = 0, heads = 0;
};

// q_lat [tokens, heads, 512] and q_pe [tokens, heads, 64] (rotated), with their token and head
// strides in elements; the paged latent cache [blocks, block_size, 576] ([c | k_pe] rows;
// cache_rows = blocks x block_size) with the concatenated block tables; items (device) name
// each token's row, table and context; out [tokens, heads, 512] at its strides. All BF16, every
// row 16-byte aligned. `partial`: FlashMlaDecodePartialFloats floats of scratch when
// split.splits > 1.
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
  FlashMlaDecodeSplit split;
  float* partial;
  void* out;
  int64_t out_token_stride, out_head_stride;
  // Split launches only: leave the partials unmerged (out is not written); the caller merges
  // them (FlashSplitPartialsOf, MergeSplits) instead of a combine kernel.
  bool defer_merge = false;
};
inline FlashSplitPartials FlashSplitPartialsOf(const FlashMlaDecodeParams& p) {
  return {p.partial, p.num_items, p.split.splits, p.heads};
}
void FlashMlaDecode(const FlashMlaDecodeParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
