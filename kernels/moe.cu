#include <cassert>

#include "kernels/device_utils.cuh"
#include "kernels/launch.cuh"
#include "kernels/moe.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kMaxExperts = 1024;
constexpr int kMaxGroups = 64;

// A selection candidate: valid ones beat invalid ones, then the larger value, then the lower
// index: the order of the reference's serial scans (first best in index order wins ties).
struct Candidate {
  float value;
  int32_t index;
  bool valid;
};

__device__ __forceinline__ bool Beats(const Candidate& a, const Candidate& b) {
  if (a.valid != b.valid) return a.valid;
  if (a.value != b.value) return a.value > b.value;
  return a.index < b.index;
}

constexpr int kMaxTopK = 32;

// The number of candidates among [begin, end) that beat `mine` (values from `value`, all valid).
// Beats is a strict total order on non-NaN values, so the ranks of distinct candidates differ.
template <typename Value>
__device__ __forceinline__ int RankAmong(const Candidate& mine, int64_t begin, int64_t end,
                                         Value&& value) {
  int rank = 0;
  for (int64_t j = begin; j < end; ++j) {
    rank += Beats(Candidate{value(j), static_cast<int32_t>(j), true}, mine) ? 1 : 0;
  }
  return rank;
}

// One block per token, one thread per expert. Each of the reference's serial selections (its
// groups' two best scores, the topk_groups best groups, the top_k best experts) takes the
// candidates of rank < k, where a candidate's rank is the number of candidates that beat it:
// the same picks in the same order, without a round per pick. NaN scores count as -inf (a
// total order keeps every rank distinct, so every output slot is written).
__global__ void MoeTopkKernel(MoeTopkParams p) {
  KernelPrologue();
  __shared__ float s[kMaxExperts], c[kMaxExperts];
  __shared__ float best[kMaxGroups], second[kMaxGroups];
  __shared__ bool keep[kMaxGroups];
  __shared__ float picked[kMaxTopK];  // s of the picks, by rank
  const int64_t t = blockIdx.x;
  const int e = threadIdx.x;
  const bool is_expert = e < p.experts;
  const int64_t group_size = p.experts / p.groups, group = e / group_size;
  if (is_expert) {
    s[e] = 1.0f / (1.0f + expf(-p.logits[t * p.experts + e]));
    const float v = s[e] + p.bias[e];
    c[e] = isnan(v) ? -INFINITY : v;
  }
  __syncthreads();
  if (is_expert) {
    const int rank = RankAmong({c[e], e, true}, group * group_size, (group + 1) * group_size,
                               [&](int64_t j) { return c[j]; });
    if (rank == 0) best[group] = c[e];
    if (rank == 1) second[group] = c[e];
  }
  __syncthreads();
  auto group_score = [&](int64_t g) { return group_size >= 2 ? best[g] + second[g] : best[g]; };
  if (e < p.groups) {
    keep[e] = RankAmong({group_score(e), e, true}, 0, p.groups, group_score) < p.topk_groups;
  }
  __syncthreads();
  if (is_expert && !keep[group]) c[e] = -INFINITY;
  __syncthreads();
  if (is_expert) {
    const int rank = RankAmong({c[e], e, true}, 0, p.experts, [&](int64_t j) { return c[j]; });
    if (rank < p.top_k) {
      p.ids[t * p.ids_stride + rank] = e;
      picked[rank] = s[e];
    }
  }
  __syncthreads();
  if (e < p.top_k) {
    float sum = 0.0f;  // in pick order, as the reference adds
    for (int64_t i = 0; i < p.top_k; ++i) sum += picked[i];
    const float denom = p.norm_topk_prob ? sum + 1e-20f : 1.0f;
    p.weights[t * p.weights_stride + e] = picked[e] / denom * p.scaling;
  }
}

// Grid (column chunks, tokens). kVector: 8 columns per thread and access (Vectorizable): one
// 16-byte load per expert row instead of eight 2-byte ones. The sum runs over j in order either
// way, so both give the same values.
template <bool kVector>
__global__ void MoeCombineKernel(MoeCombineParams p) {
  KernelPrologue();
  const int64_t t = blockIdx.y;
  constexpr int kWidth = kVector ? 8 : 1;
  for (int64_t d = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
       d < p.hidden; d += static_cast<int64_t>(gridDim.x) * blockDim.x * kWidth) {
    float acc[kWidth] = {};
    for (int64_t j = 0; j < p.top_k; ++j) {
      const int32_t row = p.row_of[t * p.top_k + j];
      if (row < 0) continue;
      const float w = p.weights[t * p.weights_stride + j];
      float y[kWidth];
      if constexpr (kVector) {
        Load8(p.y, row * p.y_stride + d, ElemType::kBF16, y);
      } else {
        y[0] = ToFloat(static_cast<const bf16*>(p.y)[row * p.y_stride + d]);
      }
#pragma unroll
      for (int i = 0; i < kWidth; ++i) acc[i] += w * y[i];
    }
    if constexpr (kVector) {
      Store8(p.out, t * p.out_stride + d, acc, p.out_type);
    } else {
      StoreAs(p.out, t * p.out_stride + d, acc[0], p.out_type);
    }
  }
}

}  // namespace

void MoeTopk(const MoeTopkParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  assert(p.experts <= kMaxExperts && p.groups <= kMaxGroups && p.top_k <= kMaxTopK &&
         p.top_k <= p.experts && p.experts % p.groups == 0);
  Launch(MoeTopkKernel, static_cast<unsigned>(p.tokens), (p.experts + 31) / 32 * 32, 0, stream,
         p);
}

void MoeCombine(const MoeCombineParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  if (Vectorizable(p.hidden, {{p.y, p.y_stride}, {p.out, p.out_stride}})) {
    const dim3 grid(CeilDiv(p.hidden, 256 * 8), static_cast<unsigned>(p.tokens));
    Launch(MoeCombineKernel<true>, grid, 256, 0, stream, p);
  } else {
    const dim3 grid(CeilDiv(p.hidden, 256 * 4), static_cast<unsigned>(p.tokens));
    Launch(MoeCombineKernel<false>, grid, 256, 0, stream, p);
  }
}

}  // namespace dsv3::kernels
