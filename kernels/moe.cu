#include "kernels/device_utils.cuh"
#include "kernels/launch_check.h"
#include "kernels/moe.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kMaxExperts = 1024;
constexpr int kMaxGroups = 64;

// One block per token: scores in parallel, then the (tiny) selection by one thread, in the
// reference's order so that ties resolve identically.
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
  if (threadIdx.x != 0) return;
  for (int64_t i = 0; i < p.topk_groups; ++i) {
    int64_t best = -1;
    for (int64_t g = 0; g < p.groups; ++g) {
      if (!keep[g] && (best < 0 || group_score[g] > group_score[best])) best = g;
    }
    keep[best] = true;
  }
  for (int64_t e = 0; e < p.experts; ++e) {
    if (!keep[e / group_size]) c[e] = -INFINITY;
  }
  int32_t* ids = p.ids + t * p.ids_stride;
  float* w = p.weights + t * p.weights_stride;
  float sum = 0.0f;
  for (int64_t i = 0; i < p.top_k; ++i) {
    int64_t best = -1;
    for (int64_t e = 0; e < p.experts; ++e) {
      if (!taken[e] && (best < 0 || c[e] > c[best])) best = e;
    }
    ids[i] = static_cast<int32_t>(best);
    w[i] = s[best];
    sum += s[best];
    taken[best] = true;
  }
  const float denom = p.norm_topk_prob ? sum + 1e-20f : 1.0f;
  for (int64_t i = 0; i < p.top_k; ++i) w[i] = w[i] / denom * p.scaling;
}

__global__ void MoeCombineKernel(MoeCombineParams p) {
  const int64_t t = blockIdx.y;
  const bf16* y = static_cast<const bf16*>(p.y);
  bf16* out = static_cast<bf16*>(p.out) + t * p.out_stride;
  for (int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; d < p.hidden;
       d += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < p.top_k; ++j) {
      const int32_t row = p.row_of[t * p.top_k + j];
      if (row >= 0) acc += p.weights[t * p.weights_stride + j] * ToFloat(y[row * p.y_stride + d]);
    }
    out[d] = FromFloat<bf16>(acc);
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
