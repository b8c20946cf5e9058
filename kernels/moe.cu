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

// The best candidate of the warp; every lane gets it (Beats is a strict total order, so the
// butterfly leaves the one maximum in every lane).
__device__ __forceinline__ Candidate WarpBest(Candidate c) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Candidate other;
    other.value = __shfl_xor_sync(0xffffffffu, c.value, o);
    other.index = __shfl_xor_sync(0xffffffffu, c.index, o);
    other.valid = __shfl_xor_sync(0xffffffffu, static_cast<int>(c.valid), o) != 0;
    if (Beats(other, c)) c = other;
  }
  return c;
}

// Tokens per block of MoeTopkRoundsKernel, one warp each.
constexpr int kTopkWarps = 4;

// Large steps (prefill): one warp per token, every selection in rounds of a warp-wide arg-max
// (no block barriers), with the reference's tie order, so ids match the CPU exactly. O(E) work
// per pick; the ranks kernel below does O(E^2) per token and wins only where latency counts.
// Dynamic shared memory per warp: s and c [E] F32, taken [E].
__global__ void MoeTopkRoundsKernel(MoeTopkParams p) {
  KernelPrologue();
  extern __shared__ float scratch[];
  __shared__ float group_scores[kTopkWarps][kMaxGroups];
  __shared__ bool kept_groups[kTopkWarps][kMaxGroups];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kTopkWarps + warp;
  if (t >= p.tokens) return;  // the whole warp: nothing below synchronizes the block
  float* s = scratch + warp * 2 * p.experts;
  float* c = s + p.experts;
  bool* taken = reinterpret_cast<bool*>(scratch + kTopkWarps * 2 * p.experts) + warp * p.experts;
  float* group_score = group_scores[warp];
  bool* keep = kept_groups[warp];
  for (int64_t e = lane; e < p.experts; e += 32) {
    s[e] = 1.0f / (1.0f + expf(-p.logits[t * p.experts + e]));
    c[e] = s[e] + p.bias[e];
    taken[e] = false;
  }
  __syncwarp();
  const int64_t group_size = p.experts / p.groups;
  for (int64_t g = lane; g < p.groups; g += 32) {
    float best = -INFINITY, second = -INFINITY;
    for (int64_t j = 0; j < group_size; ++j) {
      const float v = c[g * group_size + j];
      if (v > best) {
        second = best;
        best = v;
      } else if (v > second) {
        second = v;
      }
    }
    group_score[g] = group_size >= 2 ? best + second : best;
    keep[g] = false;
  }
  __syncwarp();
  for (int64_t round = 0; round < p.topk_groups; ++round) {
    Candidate mine{-INFINITY, INT32_MAX, false};
    for (int64_t g = lane; g < p.groups; g += 32) {
      const Candidate cand{group_score[g], static_cast<int32_t>(g), !keep[g]};
      if (Beats(cand, mine)) mine = cand;
    }
    const Candidate best = WarpBest(mine);
    if (lane == 0) keep[best.index] = true;
    __syncwarp();
  }
  for (int64_t e = lane; e < p.experts; e += 32) {
    if (!keep[e / group_size]) c[e] = -INFINITY;
  }
  __syncwarp();
  int32_t* ids = p.ids + t * p.ids_stride;
  float* w = p.weights + t * p.weights_stride;
  float sum = 0.0f;  // lane 0's
  for (int64_t i = 0; i < p.top_k; ++i) {
    Candidate mine{-INFINITY, INT32_MAX, false};
    for (int64_t e = lane; e < p.experts; e += 32) {
      const Candidate cand{c[e], static_cast<int32_t>(e), !taken[e]};
      if (Beats(cand, mine)) mine = cand;
    }
    const Candidate best = WarpBest(mine);
    if (lane == 0) {
      ids[i] = best.index;
      w[i] = s[best.index];
      sum += s[best.index];
      taken[best.index] = true;
    }
    __syncwarp();
  }
  if (lane != 0) return;
  const float denom = p.norm_topk_prob ? sum + 1e-20f : 1.0f;
  for (int64_t i = 0; i < p.top_k; ++i) w[i] = w[i] / denom * p.scaling;
}

constexpr int kMaxTopK = 32;
// Tokens up to which MoeTopk ranks (MoeTopkRanksKernel) instead of running rounds: on the H200
// with V3's 256 experts in 8 groups and top 8, ranking is twice as fast at batch 1 (a decode
// step's latency) and three times slower at 4096 tokens (docs/cuda.md).
constexpr int64_t kRanksMaxTokens = 256;

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

// Decode-sized steps: one block per token, one thread per expert. Each of the reference's serial
// selections (its groups' two best scores, the topk_groups best groups, the top_k best experts)
// takes the candidates of rank < k, where a candidate's rank is the number of candidates that
// beat it: the same picks in the same order, without a round per pick. NaN scores count as -inf
// (a total order keeps every rank distinct, so every output slot is written).
__global__ void MoeTopkRanksKernel(MoeTopkParams p) {
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
    // Row `row` of y at columns [d, d + kWidth), as F32.
    auto load = [&](int64_t row, float(&y)[kWidth]) {
      if constexpr (kVector) {
        Load8(p.y, row * p.y_stride + d, p.y_type, y);
      } else {
        y[0] = LoadAs(p.y, row * p.y_stride + d, p.y_type);
      }
    };
    float acc[kWidth] = {};
    for (int64_t j = 0; j < p.top_k; ++j) {
      const int32_t row = p.row_of[t * p.top_k + j];
      if (row < 0) continue;
      const float w = p.weights[t * p.weights_stride + j];
      float y[kWidth];
      load(row, y);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) {
        // F32 rows stand for the routed experts' BF16 outputs (see MoeCombineParams).
        if (p.y_type == ElemType::kF32) y[i] = ToFloat(FromFloat<bf16>(y[i]));
        acc[i] += w * y[i];
      }
    }
    if (p.shared_row != nullptr) {
      // Rounded as the routed sum would be stored, then added as the shared expert's separate
      // output would be (Add): the same values as running it apart from the same GEMM results.
      if (p.out_type == ElemType::kBF16) {
#pragma unroll
        for (int i = 0; i < kWidth; ++i) acc[i] = ToFloat(FromFloat<bf16>(acc[i]));
      }
      float y[kWidth];
      load(p.shared_row[t], y);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) acc[i] += y[i];
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
  if (p.tokens <= kRanksMaxTokens) {
    Launch(MoeTopkRanksKernel, static_cast<unsigned>(p.tokens), (p.experts + 31) / 32 * 32, 0,
           stream, p);
    return;
  }
  // s and c F32 and taken per warp; E <= kMaxExperts keeps it at 36 KB.
  const size_t scratch = kTopkWarps * p.experts * (2 * sizeof(float) + sizeof(bool));
  Launch(MoeTopkRoundsKernel, CeilDiv(p.tokens, kTopkWarps), kTopkWarps * 32, scratch, stream, p);
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
