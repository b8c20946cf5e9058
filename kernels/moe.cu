#include "kernels/device_utils.cuh"
#include "kernels/launch_check.h"
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

// The best candidate of the block; every thread gets it. blockDim.x a multiple of 32.
__device__ Candidate BlockBest(Candidate c) {
  __shared__ Candidate partial[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Candidate other;
    other.value = __shfl_xor_sync(0xffffffffu, c.value, o);
    other.index = __shfl_xor_sync(0xffffffffu, c.index, o);
    other.valid = __shfl_xor_sync(0xffffffffu, static_cast<int>(c.valid), o) != 0;
    if (Beats(other, c)) c = other;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = c;
  __syncthreads();
  c = partial[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
    if (Beats(partial[w], c)) c = partial[w];
  }
  return c;
}

// One block per token: scores, group scores and every selection round in parallel (a block-wide
// arg-max per round), with the reference's tie order, so ids match the CPU exactly.
__global__ void MoeTopkKernel(MoeTopkParams p) {
  __shared__ float s[kMaxExperts], c[kMaxExperts], group_score[kMaxGroups];
  __shared__ bool keep[kMaxGroups], taken[kMaxExperts];
  const int64_t t = blockIdx.x;
  for (int64_t e = threadIdx.x; e < p.experts; e += blockDim.x) {
    s[e] = 1.0f / (1.0f + expf(-p.logits[t * p.experts + e]));
    c[e] = s[e] + p.bias[e];
    taken[e] = false;
  }
  __syncthreads();
  const int64_t group_size = p.experts / p.groups;
  for (int64_t g = threadIdx.x; g < p.groups; g += blockDim.x) {
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
  __syncthreads();
  for (int64_t round = 0; round < p.topk_groups; ++round) {
    Candidate mine{-INFINITY, INT32_MAX, false};
    for (int64_t g = threadIdx.x; g < p.groups; g += blockDim.x) {
      const Candidate cand{group_score[g], static_cast<int32_t>(g), !keep[g]};
      if (Beats(cand, mine)) mine = cand;
    }
    const Candidate best = BlockBest(mine);
    if (threadIdx.x == 0) keep[best.index] = true;
    __syncthreads();
  }
  for (int64_t e = threadIdx.x; e < p.experts; e += blockDim.x) {
    if (!keep[e / group_size]) c[e] = -INFINITY;
  }
  __syncthreads();
  int32_t* ids = p.ids + t * p.ids_stride;
  float* w = p.weights + t * p.weights_stride;
  float sum = 0.0f;  // thread 0's
  for (int64_t i = 0; i < p.top_k; ++i) {
    Candidate mine{-INFINITY, INT32_MAX, false};
    for (int64_t e = threadIdx.x; e < p.experts; e += blockDim.x) {
      const Candidate cand{c[e], static_cast<int32_t>(e), !taken[e]};
      if (Beats(cand, mine)) mine = cand;
    }
    const Candidate best = BlockBest(mine);
    if (threadIdx.x == 0) {
      ids[i] = best.index;
      w[i] = s[best.index];
      sum += s[best.index];
      taken[best.index] = true;
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  const float denom = p.norm_topk_prob ? sum + 1e-20f : 1.0f;
  for (int64_t i = 0; i < p.top_k; ++i) w[i] = w[i] / denom * p.scaling;
}

__global__ void MoeCombineKernel(MoeCombineParams p) {
  const int64_t t = blockIdx.y;
  const bf16* y = static_cast<const bf16*>(p.y);
  for (int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; d < p.hidden;
       d += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < p.top_k; ++j) {
      const int32_t row = p.row_of[t * p.top_k + j];
      if (row >= 0) acc += p.weights[t * p.weights_stride + j] * ToFloat(y[row * p.y_stride + d]);
    }
    StoreAs(p.out, t * p.out_stride + d, acc, p.out_type);
  }
}

}  // namespace

void MoeTopk(const MoeTopkParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  MoeTopkKernel<<<static_cast<unsigned>(p.tokens), 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

void MoeCombine(const MoeCombineParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  const dim3 grid(CeilDiv(p.hidden, 256 * 4), static_cast<unsigned>(p.tokens));
  MoeCombineKernel<<<grid, 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv3::kernels
