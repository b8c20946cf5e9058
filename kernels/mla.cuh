// Multi-head latent attention over the paged latent cache (SPEC section 3).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv3::kernels {

// cache[slot_mapping[t], :] = latent[t, :]. latent [T, kv_dim] BF16, cache [slots, kv_dim] BF16.
struct WriteKvCacheParams {
  const void* latent;
  int64_t latent_stride;
  const int64_t* slot_mapping;  // [T]
  void* cache;
  int64_t kv_dim;
  int64_t tokens;
};
void WriteKvCache(const WriteKvCacheParams& p, cudaStream_t stream);

// Per-sequence layout of a step, device arrays filled once per step by the backend.
struct MlaSequence {
  int32_t token_begin;    // first row of the sequence's new tokens
  int32_t context_begin;  // position of its first new token
  int32_t table_offset;   // start of its block table in the concatenated tables
  int32_t dense_offset;   // first row of its context in dense_kv (naive form)
};

// Causal attention of every (token, head): score(j) = (q_a . K_A[j] + q_b . k_pe[j]) * scale over
// positions j <= the token's own, softmax, out = sum_j p_j V[j]. k_pe[j] is cache row j at
// column kpe_offset (shared by all heads). K_A and V are either
// - absorbed form (dense_kv null): the cached latent c, cache row j columns [0, da) and [0, dv);
// - naive form: per-head rows of dense_kv, [ctx rows, heads, head_stride] where K_A is columns
//   [0, da) and V columns [dense_v_offset, dense_v_offset + dv) of each head.
// q_a [T, heads, da], q_b [T, heads, db], out [T, heads, dv]; all BF16; dv <= 512, da + db <= 640.
struct MlaAttentionParams {
  const void* q_a;
  int64_t q_a_token_stride, q_a_head_stride;
  const void* q_b;
  int64_t q_b_token_stride, q_b_head_stride;
  int32_t da, db, dv;
  int64_t tokens, heads;
  const int32_t* token_rows;  // [tokens]: which rows of q and out this launch handles
  const void* cache;  // [slots, kv_dim]
  int64_t kv_dim;
  int32_t kpe_offset;
  int32_t block_size;
  const int32_t* block_tables;  // concatenated per-sequence tables
  const int32_t* token_seq;     // [T]: the sequence of each token
  const MlaSequence* sequences;
  const void* dense_kv;
  int64_t dense_row_stride, dense_head_stride;
  int32_t dense_v_offset;
  void* out;
  int64_t out_token_stride, out_head_stride;
  float scale;
  // Key splits (flash-decoding): splits > 1 divides each token's keys into `splits` ranges,
  // attended by separate blocks that write (max, sum, unnormalized output) per range to
  // `partial` [tokens, heads, splits, 2 + dv] F32; MlaAttention then merges them into out.
  int32_t splits = 1;
  float* partial = nullptr;
};
void MlaAttention(const MlaAttentionParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
