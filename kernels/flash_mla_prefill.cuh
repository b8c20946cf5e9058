// Causal flash attention for MLA's naive (prefill) form, SPEC section 3: per head h,
// score(i, j) = (q_nope_h[i] . k_nope_h[j] + q_pe_h[i] . k_pe[j]) * scale for the keys j at or
// before token i's position, an F32 softmax, and out_h[i] = sum_j p(i, j) v_h[j] with the
// probabilities rounded to BF16 for the weighted sum (as FlashAttention does). Scores never
// leave the chip. Only the DeepSeek-V3 head dims: nope 128, rope 64, v 128.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv3::kernels {

constexpr int64_t kFlashMlaNope = 128, kFlashMlaRope = 64, kFlashMlaV = 128;
// Query tokens per block: a sequence's new tokens are cut into tiles of at most this many.
constexpr int32_t kFlashMlaTileTokens = 128;

// One query tile: tokens [q_row, q_row + rows) of q and out, at positions [pos, pos + rows) of a
// sequence whose key 0 is row dense_offset of kv and latents. The tile attends keys
// [0, pos + rows).
struct FlashMlaTile {
  int32_t q_row, rows, pos, dense_offset;
};

// q [tokens, heads, 192] (rope part rotated), kv [rows, heads, 256] (k_nope | v per head, the
// up-projected latents), latents [rows, latent_stride] whose columns [rope_offset, + 64) hold
// k_pe, out [tokens, heads * 128]; all BF16, row strides in elements, every row 16-byte aligned
// (strides and rope_offset multiples of 8). tiles: device array, longest first (the blocks of
// the longest tiles start first, so the causal imbalance evens out at the end of the grid).
struct FlashMlaPrefillParams {
  const void* q;
  int64_t q_token_stride, q_head_stride;
  const void* kv;
  int64_t kv_row_stride;
  const void* latents;
  int64_t latent_stride, rope_offset;
  void* out;
  int64_t out_token_stride;
  const FlashMlaTile* tiles;
  int32_t num_tiles, heads;
  float scale;
};
void FlashMlaPrefill(const FlashMlaPrefillParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
