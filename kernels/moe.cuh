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
