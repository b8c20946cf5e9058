// The absorbed MLA's per-head products with kv_b in decode steps (SPEC section 3): W_UK folded
// into the query before attention and W_UV applied to its latent output after, for steps of up
// to 8 tokens, streaming the weights on tensor cores (kernels/mla_absorb.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/flash_mla_decode.cuh"

namespace dsv3::kernels {

// The most tokens MlaAbsorb takes in one launch (the mma's N).
inline constexpr int32_t kMlaAbsorbMaxTokens = 8;

// out[t, h, 0:m] = A_h x[t, h, 0:k] for t < tokens and h < heads, where A_h [m, k] is a per-head
// slice of a BF16 weight whose stored rows are w_row_stride elements apart; head h's slice
// starts at w + h * w_head_stride (elements):
// - transposed false (W_UV, out_h^T = W_UV_h o_lat_h^T): A_h is the slice's rows, stored [m, k];
// - transposed true (W_UK, q_lat_h^T = W_UK_h^T q_nope_h^T): A_h is the transpose of the
//   slice's rows, stored [k, m].
// x [tokens, heads, k] and out [tokens, heads, m] are BF16 at the given element strides; out
// overlaps neither x nor w. F32 accumulation, out rounded to BF16.
struct MlaAbsorbParams {
  const void* w;
  int64_t w_row_stride, w_head_stride;
  bool transposed;
  int32_t m, k;
  const void* x;
  int64_t x_token_stride, x_head_stride;
  void* out;
  int64_t out_token_stride, out_head_stride;
  int32_t tokens, heads;
  // Optional (W_UV of one token, k 512, after a flash decode launch in parts that deferred its
  // merge): x is not read; the token's row is item 0's pieces merged for head h (MergeSplits,
  // the bits of the flash decode kernel's combine), so no combine kernel runs in between.
  FlashSplitPartials merge = {};
  // Optional (W_UV with m 128, out's heads 128 apart: a head's outputs are one 1x128 block of the
  // next linear's input): out also quantized as QuantizeActivations would quantize it (the same
  // bits): codes q [tokens, q_stride] e4m3 at column h * 128 + row, scales [heads, q_rows] F32.
  // The two blocks of a head (64 rows each, a cluster of two) share each token's amax through
  // distributed shared memory.
  uint8_t* q = nullptr;
  float* q_scales = nullptr;
  int64_t q_stride = 0, q_rows = 0;
  bool ue8m0 = false;
};

// Whether MlaAbsorb serves p: 1 to 8 tokens, at most 65535 heads, m and k positive multiples of
// 16, k <= 512, w and x 16-byte aligned with strides of whole 8-element (16-byte) chunks; with q,
// not transposed, m 128, out_head_stride 128 and q_rows at least the tokens.
bool MlaAbsorbSupports(const MlaAbsorbParams& p);

// Launches the product (MlaAbsorbSupports(p) must hold), with PDL where the calling thread asks
// for it (launch.cuh): the weight loads are issued before the wait for the kernel before.
void MlaAbsorb(const MlaAbsorbParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
