// MoE routing (noaux_tc, SPEC section 3) and the weighted combine of expert outputs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/elem_type.h"

namespace dsv3::kernels {

// From router logits [T, E] F32: s = sigmoid(logits), c = s + bias; groups of E / groups
// experts scored by the sum of their two best c; the topk_groups best groups kept; the top_k
// best c among them chosen (ties: lower index); weights s / sum(s) (if norm) * scaling.
// ids [T, top_k] I32, weights [T, top_k] F32. E <= 1024, top_k <= 32. NaN scores give
// unspecified picks among the experts (never an id out of range).
struct MoeTopkParams {
  const float* logits;
  const float* bias;
  int64_t tokens, experts, top_k, groups, topk_groups;
  bool norm_topk_prob;
  float scaling;
  int32_t* ids;
  int64_t ids_stride;
  float* weights;
  int64_t weights_stride;
};
void MoeTopk(const MoeTopkParams& p, cudaStream_t stream);

// The router of decode-sized steps in one launch: logits [T, E] = x [T, H] BF16 . router [E, H]^T
// BF16 summed in F32, then MoeTopk's selection (same picks, order and weights). It replaces a
// cuBLASLt GEMM (split-K and its reduce) and MoeTopk, and it loads the router before its
// programmatic wait (launch.cuh), which cuBLASLt's kernels never do. The last block to finish
// selects; it finds out by a ticket that each launch returns to 0.
inline constexpr int64_t kMoeRouterMaxTokens = 8;
struct MoeRouterTopkParams {
  const void* x;  // [tokens, hidden] BF16, rows x_stride elements apart
  int64_t x_stride;
  const void* router;  // [experts, hidden] BF16, rows router_stride elements apart
  int64_t router_stride, hidden;
  int splits;        // of hidden (MoeRouterSplits)
  float* partials;   // workspace [splits, tokens, experts] F32
  uint32_t* ticket;  // one counter, 0 before the first launch: every launch leaves it 0
  // The selection and its outputs as MoeTopk takes them; topk.logits is not read.
  MoeTopkParams topk;
};
// Whether MoeRouterTopk serves these: at most kMoeRouterMaxTokens tokens, experts <= 1024,
// hidden a multiple of 8 up to 32768, x and router 16-byte aligned with strides multiple of 8.
bool MoeRouterTopkFits(const MoeRouterTopkParams& p);
// The hidden splits for a device of `multiprocessors` SMs: blocks of 8 experts times splits
// about fill the SMs, and every lane's share of a split fits the loads it issues before its wait.
int MoeRouterSplits(int64_t experts, int64_t hidden, int multiprocessors);
void MoeRouterTopk(const MoeRouterTopkParams& p, cudaStream_t stream);

// out[t, :] = sum_j weights[t, j] * y[row_of[t * top_k + j], :] over j with row_of >= 0, in
// F32, rounded once to out_type. y [rows, hidden] (y_type; expert outputs in permuted order).
struct MoeCombineParams {
  const void* y;
  int64_t y_stride;
  const int32_t* row_of;  // [T * top_k], -1 for experts this rank does not hold
  const float* weights;
  int64_t weights_stride;
  void* out;  // [tokens, hidden] of out_type (BF16 or F32)
  int64_t out_stride;
  int64_t tokens, top_k, hidden;
  ElemType out_type = ElemType::kBF16;
  // Optional [tokens]: the row of y holding the token's shared-expert output, added with weight
  // 1 to the routed sum rounded to out_type (as an Add of the two outputs would: MoeAlign's
  // shared_expert).
  const int32_t* shared_row = nullptr;
  // y's type. F32 (with a shared expert and an F32 out: its output, as the shared MLP apart
  // would give it, unrounded): the routed rows are rounded to BF16 as read, which is what they
  // would have been stored as.
  ElemType y_type = ElemType::kBF16;
};
void MoeCombine(const MoeCombineParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
