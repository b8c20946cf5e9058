// The small kernels around MLA attention done as GEMMs (engine/backend/cuda/cuda_attention_gemm.cc):
// cuBLASLt's tensor cores compute the scores and the weighted sums; these gather the operands
// into GEMM-friendly layouts and apply the masked softmax in between. All BF16 unless stated.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv3::kernels {

// One sequence's slice of a decode batch done by GEMMs.
struct MlaGemmItem {
  int32_t token_row;     // its (single) new token's row in q and out
  int32_t table_offset;  // start of its block table in the concatenated tables
  int32_t context;       // keys it attends: every cached position, its own included
  int32_t tile_begin;    // flash decode kernel: tiles of the items before (flash_mla_decode.cuh)
};

// latents [items, max_context, kv_dim]: row j of item i is cache row j of its sequence (through
// the block table) for j < context, zeros after (the padded keys get probability 0, and zeros
// keep 0 * garbage out of the weighted sum).
struct GatherLatentsParams {
  const void* cache;  // [slots, kv_dim]
  int64_t kv_dim;
  int32_t block_size;
  const int32_t* block_tables;
  const MlaGemmItem* items;
  int64_t num_items, max_context;
  void* latents;
};
void GatherLatents(const GatherLatentsParams& p, cudaStream_t stream);

// query [items, heads, a_dim + b_dim]: per item and head, a_dim values of a (row token_row) then
// b_dim values of b (the absorbed query and its rotary part side by side, as the latent rows
// hold c and k_pe).
struct GatherQueryParams {
  const void* a;
  int64_t a_token_stride, a_head_stride, a_dim;
  const void* b;
  int64_t b_token_stride, b_head_stride, b_dim;
  const MlaGemmItem* items;
  int64_t num_items, heads;
  void* query;
};
void GatherQuery(const GatherQueryParams& p, cudaStream_t stream);

// For rows r of scores (F32, [rows, ld]): p = softmax(scale * scores[r, :valid(r)]), written as
// BF16 probs [rows, ld] with zeros in [valid(r), ld). valid(r) = items[r / heads].context when
// items is set (decode), else causal_begin + r % causal_period + 1 (prefill: rows are (head,
// token) and token i of the chunk sees positions up to causal_begin + i).
struct MaskedSoftmaxParams {
  const float* scores;
  void* probs;
  int64_t rows, ld;
  float scale;
  const MlaGemmItem* items;
  int64_t heads;
  int64_t causal_begin, causal_period;
};
void MaskedSoftmax(const MaskedSoftmaxParams& p, cudaStream_t stream);

// dst[items[i].token_row, :cols] = src[i, :cols] (row strides in elements).
struct ScatterItemRowsParams {
  const void* src;
  int64_t src_stride;
  const MlaGemmItem* items;
  int64_t num_items, cols;
  void* dst;
  int64_t dst_stride;
};
void ScatterItemRows(const ScatterItemRowsParams& p, cudaStream_t stream);

// keys [rows, heads, nope + rope]: per row and head, the nope values of that head's rows of kv
// ([rows, heads, head_stride]) then the row's shared rotary key (rope values of latents at
// column rope_offset, [rows, latent_stride]): the naive form's per-head keys in one operand.
struct AssembleKeysParams {
  const void* kv;
  int64_t kv_row_stride, kv_head_stride, nope;
  const void* latents;
  int64_t latent_stride, rope_offset, rope;
  int64_t rows, heads;
  void* keys;
};
void AssembleKeys(const AssembleKeysParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
