#include <algorithm>

#include "kernels/device_utils.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/launch_check.h"

namespace dsv3::kernels {

namespace {

// One block per token.
__global__ void EmbeddingKernel(EmbeddingParams p) {
  const int64_t t = blockIdx.x;
  const int64_t local = static_cast<int64_t>(p.ids[t]) - p.first_row;
  bf16* dst = static_cast<bf16*>(p.out) + t * p.out_stride;
  if (local < 0 || local >= p.rows) {
    for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) dst[i] = FromFloat<bf16>(0.0f);
    return;
  }
  const bf16* src = static_cast<const bf16*>(p.table) + local * p.hidden;
  for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) dst[i] = src[i];
}

// One block per row; the row is read twice (sum of squares, then scale), which keeps any width.
__global__ void RmsNormKernel(RmsNormParams p) {
  const int64_t r = blockIdx.x;
  const bf16* x = static_cast<const bf16*>(p.x) + r * p.x_stride;
  bf16* out = static_cast<bf16*>(p.out) + r * p.out_stride;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
    const float v = ToFloat(x[i]);
    sum += v * v;
  }
  sum = BlockSum(sum);
  const float inv = rsqrtf(sum / static_cast<float>(p.dim) + p.eps);
  // In place is safe: each thread rewrites only the elements it alone read above.
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
    out[i] = FromFloat<bf16>(p.weight[i] * (ToFloat(x[i]) * inv));
  }
}

__global__ void BinaryKernel(BinaryParams p) {
  const int64_t r = blockIdx.y;
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < p.cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float av = LoadAs(p.a, r * p.a_stride + i, p.a_type);
    const float bv = LoadAs(p.b, r * p.b_stride + i, p.b_type);
    const float v = p.kind == BinaryKind::kAdd ? av + bv : av / (1.0f + expf(-av)) * bv;
    StoreAs(p.out, r * p.out_stride + i, v, p.out_type);
  }
}

template <typename T>
__global__ void GatherRowsKernel(GatherRowsParams p) {
  const int64_t r = blockIdx.x;
  const T* src = static_cast<const T*>(p.x) + static_cast<int64_t>(p.rows[r]) * p.x_stride;
  T* dst = static_cast<T*>(p.out) + r * p.out_stride;
  for (int64_t i = threadIdx.x; i < p.cols; i += blockDim.x) dst[i] = src[i];
}

// One thread per (token, head, pair).
__global__ void RopeKernel(RopeParams p) {
  const int64_t half = p.rope_dim / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.tokens * p.heads * half) return;
  const int64_t i = idx % half, h = (idx / half) % p.heads, t = idx / (half * p.heads);
  const float angle = p.inv_freq[i] * static_cast<float>(p.positions[t]);
  const float c = cosf(angle) * p.attention_factor, s = sinf(angle) * p.attention_factor;
  bf16* v = static_cast<bf16*>(p.x) + t * p.token_stride + h * p.head_stride;
  bf16* a = p.interleaved ? &v[2 * i] : &v[i];
  bf16* b = p.interleaved ? &v[2 * i + 1] : &v[i + half];
  const float x0 = ToFloat(*a), x1 = ToFloat(*b);
  *a = FromFloat<bf16>(x0 * c - x1 * s);
  *b = FromFloat<bf16>(x1 * c + x0 * s);
}

__global__ void Copy2DKernel(Copy2DParams p) {
  const int64_t r = blockIdx.y;
  for (int64_t c = blockIdx.x * blockDim.x + threadIdx.x; c < p.cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    StoreAs(p.dst, r * p.dst_stride + c, LoadAs(p.src, r * p.src_stride + c, p.src_type),
            p.dst_type);
  }
}

__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void RandomFillKernel(RandomFillParams p) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t bits = SplitMix64(p.seed * 0x100000001b3ull + static_cast<uint64_t>(i));
    // Four 16-bit uniforms; their centred sum is close enough to a normal for weights.
    float u[4];
    for (int j = 0; j < 4; ++j) u[j] = static_cast<float>((bits >> (16 * j)) & 0xffff) / 65535.0f;
    switch (p.type) {
      case ElemType::kF8E4M3: {
        const float normal = (u[0] + u[1] + u[2] + u[3] - 2.0f) * 1.7320508f;
        const float v = fminf(fmaxf(normal * p.scale, -448.0f), 448.0f);
        static_cast<__nv_fp8_e4m3*>(p.out)[i] = __nv_fp8_e4m3(v);
        break;
      }
      case ElemType::kBF16:
        static_cast<bf16*>(p.out)[i] = FromFloat<bf16>(p.mean + (2.0f * u[0] - 1.0f) * p.scale);
        break;
      default:
        static_cast<float*>(p.out)[i] = p.mean + (2.0f * u[0] - 1.0f) * p.scale;
        break;
    }
  }
}

}  // namespace

void Embedding(const EmbeddingParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  EmbeddingKernel<<<static_cast<unsigned>(p.tokens), 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

void RmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  RmsNormKernel<<<static_cast<unsigned>(p.rows), 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

void Binary(const BinaryParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.cols == 0) return;
  const dim3 grid(CeilDiv(p.cols, 256 * 4), static_cast<unsigned>(p.rows));
  BinaryKernel<<<grid, 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

void GatherRows(const GatherRowsParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  if (p.type == ElemType::kBF16) {
    GatherRowsKernel<bf16><<<static_cast<unsigned>(p.n), 256, 0, stream>>>(p);
  } else {
    GatherRowsKernel<float><<<static_cast<unsigned>(p.n), 256, 0, stream>>>(p);
  }
  DSV3_CUDA_CHECK_LAUNCH();
}

void Rope(const RopeParams& p, cudaStream_t stream) {
  const int64_t n = p.tokens * p.heads * (p.rope_dim / 2);
  if (n == 0) return;
  RopeKernel<<<CeilDiv(n, 256), 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

void Copy2D(const Copy2DParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.cols == 0) return;
  const dim3 grid(CeilDiv(p.cols, 256 * 4), static_cast<unsigned>(p.rows));
  Copy2DKernel<<<grid, 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

void RandomFill(const RandomFillParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(CeilDiv(p.n, 256), 132 * 16));
  RandomFillKernel<<<blocks, 256, 0, stream>>>(p);
  DSV3_CUDA_CHECK_LAUNCH();
}

}  // namespace dsv3::kernels
