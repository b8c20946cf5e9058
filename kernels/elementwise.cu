#include <algorithm>
#include <cassert>

#include "kernels/device_utils.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/launch.cuh"
#include "kernels/rope.cuh"

namespace dsv3::kernels {

namespace {

// One block per token.
__global__ void EmbeddingKernel(EmbeddingParams p) {
  KernelPrologue();
  const int64_t t = blockIdx.x;
  const int64_t local = static_cast<int64_t>(p.ids[t]) - p.first_row;
  const int64_t dst = t * p.out_stride;
  if (local < 0 || local >= p.rows) {
    for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) {
      StoreAs(p.out, dst + i, 0.0f, p.out_type);
    }
    return;
  }
  const bf16* src = static_cast<const bf16*>(p.table) + local * p.hidden;
  for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) {
    StoreAs(p.out, dst + i, ToFloat(src[i]), p.out_type);
  }
}

// Threads of a norm's block (RmsNormKernel, RmsNormQuantizeKernel): at V3's hidden size, 896 of
// them take the row in one 8-column access each, so a decode step's single-row norm (one
// block, one SM) waits one memory latency per pass rather than four. From kNormManyRows rows
// on (prefill; at decode batch 128 they were slower), the blocks take kNormManyRowsThreads:
// more rows in flight per SM, where the rows rather than one row's latency fill the device.
// The block's width sets the order of a row's sum of squares, so every norm kernel picks it
// by NormThreads.
constexpr int kNormThreads = 1024;
constexpr int kNormManyRowsThreads = 256;
int NormThreads(int64_t rows) {
  return rows >= kNormManyRows ? kNormManyRowsThreads : kNormThreads;
}

// The first pass of a row's norm, by every thread of its block: with p.add, x = x + add
// (rounded to x's type, written back), then 1 / sqrt(mean(x^2) + eps). Thread i takes the
// columns i * kWidth + j * blockDim.x * kWidth, as RmsNormKernel's second pass does, so there
// a thread rereads only what it wrote itself. kVector: 8 columns per access (Vectorizable).
template <bool kVector>
__device__ __forceinline__ float RowInverseRms(const RmsNormParams& p, int64_t r) {
  const int64_t x_row = r * p.x_stride, add_row = r * p.add_stride;
  constexpr int kWidth = kVector ? 8 : 1;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x * kWidth; i < p.dim; i += blockDim.x * kWidth) {
    float v[kWidth];
    if constexpr (kVector) {
      Load8(p.x, x_row + i, p.x_type, v);
    } else {
      v[0] = LoadAs(p.x, x_row + i, p.x_type);
    }
    if (p.add != nullptr) {
      float a[kWidth];
      if constexpr (kVector) {
        Load8(p.add, add_row + i, p.add_type, a);
      } else {
        a[0] = LoadAs(p.add, add_row + i, p.add_type);
      }
#pragma unroll
      for (int j = 0; j < kWidth; ++j) v[j] = RoundTo(v[j] + a[j], p.x_type);
      void* x = const_cast<void*>(p.x);  // writable whenever add is set (RmsNormParams)
      if constexpr (kVector) {
        Store8(x, x_row + i, v, p.x_type);
      } else {
        StoreAs(x, x_row + i, v[0], p.x_type);
      }
    }
#pragma unroll
    for (int j = 0; j < kWidth; ++j) sum += v[j] * v[j];
  }
  sum = BlockSum(sum);
  return rsqrtf(sum / static_cast<float>(p.dim) + p.eps);
}

// The second pass of a row's norm: out = weight * (x * inv), each thread over the columns it
// took in RowInverseRms (so in place is safe: it rewrites only what it alone read). copy
// (optional, BF16, out BF16): the same values written there too (a KV cache row).
template <bool kVector>
__device__ __forceinline__ void NormalizeRow(const RmsNormParams& p, int64_t r, float inv,
                                             bf16* copy) {
  const int64_t x_row = r * p.x_stride, out_row = r * p.out_stride;
  constexpr int kWidth = kVector ? 8 : 1;
  for (int64_t i = threadIdx.x * kWidth; i < p.dim; i += blockDim.x * kWidth) {
    float v[kWidth], w[kWidth];
    if constexpr (kVector) {
      Load8(p.x, x_row + i, p.x_type, v);
      Load8(p.weight, i, ElemType::kF32, w);
    } else {
      v[0] = LoadAs(p.x, x_row + i, p.x_type);
      w[0] = p.weight[i];
    }
#pragma unroll
    for (int j = 0; j < kWidth; ++j) v[j] = w[j] * (v[j] * inv);
    if constexpr (kVector) {
      Store8(p.out, out_row + i, v, p.out_type);
      if (copy != nullptr) Store8(copy, i, v, ElemType::kBF16);
    } else {
      StoreAs(p.out, out_row + i, v[0], p.out_type);
      if (copy != nullptr) copy[i] = FromFloat<bf16>(v[0]);
    }
  }
}

// One block per row (kNormThreads, or kNormManyRowsThreads for many rows); the row is read
// twice (sum of squares, then scale), which keeps any width (the second read mostly hits the
// cache).
template <bool kVector>
__global__ void __launch_bounds__(kNormThreads) RmsNormKernel(RmsNormParams p) {
  KernelPrologue();
  const int64_t r = blockIdx.x;
  NormalizeRow<kVector>(p, r, RowInverseRms<kVector>(p, r), nullptr);
}

// One block per padded row: the first pass as RmsNormKernel's, then warp w takes 128-column
// blocks w, w + 32, ... with 4 columns per lane (QuantizeKernel's layout): the normed values
// rounded to BF16 (stored to out), their block's amax, scale and e4m3 codes. The second pass
// touches only its own lane's columns of x and out, so out may alias x as in RmsNorm.
template <bool kVector>
__device__ __forceinline__ void RmsNormQuantizeRow(const RmsNormQuantizeParams& p, int64_t r) {
  const RmsNormParams& n = p.norm;
  const bool real = r < n.rows;  // block-uniform: padding rows skip the norm's barriers
  const float inv = real ? RowInverseRms<kVector>(n, r) : 0.0f;
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int64_t kb = threadIdx.x / 32; kb < p.cols_padded / 128; kb += warps) {
    const int64_t c0 = kb * 128 + lane * 4;
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (real && c0 < n.dim) {  // with kVector, dim % 8 == 0: all four columns or none
      float x[4], w[4];
      Load4<kVector>(n.x, r * n.x_stride + c0, r * n.x_stride + n.dim, n.x_type, x);
      Load4<kVector>(n.weight, c0, n.dim, ElemType::kF32, w);
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = RoundTo(w[j] * (x[j] * inv), ElemType::kBF16);
      bf16* out = static_cast<bf16*>(n.out) + r * n.out_stride + c0;
      if constexpr (kVector) {
        *reinterpret_cast<uint2*>(out) = make_uint2(PackBf16(v[0], v[1]), PackBf16(v[2], v[3]));
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (c0 + j < n.dim) out[j] = FromFloat<bf16>(v[j]);
        }
      }
    }
    QuantizeBlock128(v, real, p.ue8m0, p.q + r * p.cols_padded + kb * 128,
                     p.scales + kb * p.rows_padded + r);
  }
}

template <bool kVector>
__global__ void __launch_bounds__(kNormThreads) RmsNormQuantizeKernel(RmsNormQuantizeParams p) {
  KernelPrologue();
  RmsNormQuantizeRow<kVector>(p, blockIdx.x);
}

__device__ __forceinline__ float BinaryOp(BinaryKind kind, float a, float b) {
  return kind == BinaryKind::kAdd ? a + b : SiluMul(a, b);
}

// Grid (column chunks, rows). kVector: 8 columns per thread and access (Vectorizable).
template <bool kVector>
__global__ void BinaryKernel(BinaryParams p) {
  KernelPrologue();
  const int64_t r = blockIdx.y;
  constexpr int kWidth = kVector ? 8 : 1;
  for (int64_t i = (blockIdx.x * blockDim.x + threadIdx.x) * kWidth; i < p.cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * kWidth) {
    if constexpr (kVector) {
      float a[8], b[8];
      Load8(p.a, r * p.a_stride + i, p.a_type, a);
      Load8(p.b, r * p.b_stride + i, p.b_type, b);
#pragma unroll
      for (int j = 0; j < 8; ++j) a[j] = BinaryOp(p.kind, a[j], b[j]);
      Store8(p.out, r * p.out_stride + i, a, p.out_type);
    } else {
      const float av = LoadAs(p.a, r * p.a_stride + i, p.a_type);
      const float bv = LoadAs(p.b, r * p.b_stride + i, p.b_type);
      StoreAs(p.out, r * p.out_stride + i, BinaryOp(p.kind, av, bv), p.out_type);
    }
  }
}

template <typename T>
__global__ void GatherRowsKernel(GatherRowsParams p) {
  KernelPrologue();
  const int64_t r = blockIdx.x;
  const T* src = static_cast<const T*>(p.x) + static_cast<int64_t>(p.rows[r]) * p.x_stride;
  T* dst = static_cast<T*>(p.out) + r * p.out_stride;
  for (int64_t i = threadIdx.x; i < p.cols; i += blockDim.x) dst[i] = src[i];
}

// Grid (column chunks, output rows).
__global__ void ScatterSumRowsKernel(ScatterSumRowsParams p) {
  KernelPrologue();
  const int64_t i = blockIdx.y;
  const int32_t first = p.begin[i], last = p.begin[i + 1];
  for (int64_t c = blockIdx.x * blockDim.x + threadIdx.x; c < p.cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int32_t j = first; j < last; ++j) {
      sum += LoadAs(p.x, static_cast<int64_t>(p.sources[j]) * p.x_stride + c, p.x_type);
    }
    StoreAs(p.out, i * p.out_stride + c, sum, p.out_type);
  }
}

// Grid (column chunks, output rows).
template <typename T>
__global__ void PadRowsKernel(PadRowsParams p) {
  KernelPrologue();
  const int64_t r = blockIdx.y;
  T* dst = static_cast<T*>(p.out) + r * p.out_stride;
  const T* src = static_cast<const T*>(p.x) + r * p.x_stride;
  const T fill = static_cast<T>(p.fill_bits);
  for (int64_t c = blockIdx.x * blockDim.x + threadIdx.x; c < p.cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[c] = r < p.rows ? src[c] : fill;
  }
}

// Grid (column chunks, output rows).
__global__ void SumRowBlocksKernel(SumRowBlocksParams p) {
  KernelPrologue();
  const int64_t i = blockIdx.y;
  for (int64_t c = blockIdx.x * blockDim.x + threadIdx.x; c < p.cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int64_t b = 0; b < p.blocks; ++b) {
      sum += LoadAs(p.x, (b * p.block_rows + i) * p.x_stride + c, p.x_type);
    }
    StoreAs(p.out, i * p.out_stride + c, sum, p.out_type);
  }
}

// Heads one thread rotates: the angle's cosine and sine are computed once for them, while
// enough threads stay in flight for a single decode token (128 heads: 16 x 32 pairs).
constexpr int64_t kRopeHeadsPerThread = 8;

// The rotation of pair i at token t's position (kernels/rope.cuh).
__device__ __forceinline__ RopeAngle AngleOf(const RopeParams& p, int64_t t, int64_t i) {
  return RopeAngleAt(p.inv_freq, p.attention_factor, p.positions[t], i);
}

// Rotates pair i of head h of token t in place. copy (optional): the rotated pair also written
// there, at the same offsets inside a head's rope_dim values.
__device__ __forceinline__ void RotatePair(const RopeParams& p, int64_t t, int64_t h, int64_t i,
                                           RopeAngle r, bf16* copy) {
  bf16* v = static_cast<bf16*>(p.x) + t * p.token_stride + h * p.head_stride;
  const int64_t ia = p.interleaved ? 2 * i : i, ib = p.interleaved ? 2 * i + 1 : i + p.rope_dim / 2;
  const float x0 = ToFloat(v[ia]), x1 = ToFloat(v[ib]);
  const bf16 a = FromFloat<bf16>(RotatedFirst(x0, x1, r));
  const bf16 b = FromFloat<bf16>(RotatedSecond(x0, x1, r));
  v[ia] = a;
  v[ib] = b;
  if (copy != nullptr) {
    copy[ia] = a;
    copy[ib] = b;
  }
}

// One thread per (token, group of kRopeHeadsPerThread heads, pair).
__global__ void RopeKernel(RopeParams p) {
  KernelPrologue();
  const int64_t half = p.rope_dim / 2;
  const int64_t groups = (p.heads + kRopeHeadsPerThread - 1) / kRopeHeadsPerThread;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.tokens * groups * half) return;
  const int64_t i = idx % half, g = (idx / half) % groups, t = idx / (half * groups);
  const RopeAngle angle = AngleOf(p, t, i);
  const int64_t h_end = min(p.heads, (g + 1) * kRopeHeadsPerThread);
  for (int64_t h = g * kRopeHeadsPerThread; h < h_end; ++h) RotatePair(p, t, h, i, angle, nullptr);
}

// Token t's latent: its c normed in place (as RmsNormKernel) and its k_pe rotated (as
// RopeKernel), both written to the token's cache row from the values it stores.
template <bool kVector>
__device__ __forceinline__ void MlaLatentRow(const MlaInputsParams& p, int64_t t) {
  bf16* row = static_cast<bf16*>(p.cache) + p.slot_mapping[t] * p.kv_dim;
  NormalizeRow<kVector>(p.norm, t, RowInverseRms<kVector>(p.norm, t), row);
  const RopeParams& k = p.k_rope;
  for (int64_t i = threadIdx.x; i < k.rope_dim / 2; i += blockDim.x) {
    RotatePair(k, t, 0, i, AngleOf(k, t, i), row + p.norm.dim);
  }
}

// MLA's inputs, grid (tokens, 2) of kNormThreads: block (t, 0) norms token t's c in place (as
// RmsNormKernel) and rotates its k_pe (as RopeKernel), writing both to the token's cache row
// from the values it stores; block (t, 1) rotates every head's q_pe. The same bits as the four
// kernels of the parts.
template <bool kVector>
__global__ void __launch_bounds__(kNormThreads) MlaInputsKernel(MlaInputsParams p) {
  KernelPrologue();
  const int64_t t = blockIdx.x;
  if (blockIdx.y == 1) {
    const RopeParams& q = p.q_rope;
    const int64_t half = q.rope_dim / 2;
    for (int64_t j = threadIdx.x; j < q.heads * half; j += blockDim.x) {
      const int64_t i = j % half;
      RotatePair(q, t, j / half, i, AngleOf(q, t, i), nullptr);
    }
    return;
  }
  MlaLatentRow<kVector>(p, t);
}

// q_b's input and MLA's latent inputs in one grid (padded rows, 2) of kNormThreads: blocks (r, 0)
// as RmsNormQuantizeKernel's block r, blocks (t, 1) of the real tokens as MlaInputsKernel's
// (t, 0). The same bits as those two kernels (each part with its own vector form).
template <bool kQVector, bool kLVector>
__global__ void __launch_bounds__(kNormThreads)
    RmsNormQuantizeMlaLatentsKernel(RmsNormQuantizeParams q, MlaInputsParams l) {
  KernelPrologue();
  if (blockIdx.y == 0) {
    RmsNormQuantizeRow<kQVector>(q, blockIdx.x);
  } else if (blockIdx.x < l.norm.rows) {
    MlaLatentRow<kLVector>(l, blockIdx.x);
  }
}

__global__ void Copy2DKernel(Copy2DParams p) {
  KernelPrologue();
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
  KernelPrologue();
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
  Launch(EmbeddingKernel, static_cast<unsigned>(p.tokens), 256, 0, stream, p);
}

namespace {

// Whether a norm's arrays all take 16-byte accesses (the kVector form).
bool VectorizableNorm(const RmsNormParams& p) {
  return Vectorizable(p.dim, {{p.x, p.x_stride}, {p.out, p.out_stride}, {p.weight, 0}}) &&
         (p.add == nullptr || Vectorizable(p.dim, {{p.add, p.add_stride}}));
}

}  // namespace

void RmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  const int threads = NormThreads(p.rows);
  if (VectorizableNorm(p)) {
    Launch(RmsNormKernel<true>, static_cast<unsigned>(p.rows), threads, 0, stream, p);
  } else {
    Launch(RmsNormKernel<false>, static_cast<unsigned>(p.rows), threads, 0, stream, p);
  }
}

void MlaInputs(const MlaInputsParams& p, cudaStream_t stream) {
  if (p.norm.rows == 0) return;
  assert(p.norm.x == p.norm.out && p.norm.out_type == ElemType::kBF16);
  assert(p.k_rope.heads == 1 && p.kv_dim == p.norm.dim + p.k_rope.rope_dim);
  const dim3 grid(static_cast<unsigned>(p.norm.rows), 2);
  // The vector form also stores the normed c to the cache rows 8 values at a time.
  if (VectorizableNorm(p.norm) && Vectorizable(p.norm.dim, {{p.cache, p.kv_dim}})) {
    Launch(MlaInputsKernel<true>, grid, kNormThreads, 0, stream, p);
  } else {
    Launch(MlaInputsKernel<false>, grid, kNormThreads, 0, stream, p);
  }
}

void RmsNormQuantizeMlaLatents(const RmsNormQuantizeParams& q, const MlaInputsParams& l,
                               cudaStream_t stream) {
  if (q.rows_padded == 0) return;
  assert(l.norm.rows <= q.rows_padded && l.norm.x == l.norm.out);
  assert(l.norm.out_type == ElemType::kBF16 && l.k_rope.heads == 1);
  assert(l.kv_dim == l.norm.dim + l.k_rope.rope_dim);
  const dim3 grid(static_cast<unsigned>(q.rows_padded), 2);
  const bool qv = VectorizableNorm(q.norm);
  const bool lv = VectorizableNorm(l.norm) && Vectorizable(l.norm.dim, {{l.cache, l.kv_dim}});
  if (qv && lv) {
    Launch(RmsNormQuantizeMlaLatentsKernel<true, true>, grid, kNormThreads, 0, stream, q, l);
  } else if (qv) {
    Launch(RmsNormQuantizeMlaLatentsKernel<true, false>, grid, kNormThreads, 0, stream, q, l);
  } else if (lv) {
    Launch(RmsNormQuantizeMlaLatentsKernel<false, true>, grid, kNormThreads, 0, stream, q, l);
  } else {
    Launch(RmsNormQuantizeMlaLatentsKernel<false, false>, grid, kNormThreads, 0, stream, q, l);
  }
}

void RmsNormQuantize(const RmsNormQuantizeParams& p, cudaStream_t stream) {
  if (p.rows_padded == 0) return;
  const unsigned grid = static_cast<unsigned>(p.rows_padded);
  const int threads = NormThreads(p.norm.rows);  // RmsNorm's rule: the same sums
  if (VectorizableNorm(p.norm)) {
    Launch(RmsNormQuantizeKernel<true>, grid, threads, 0, stream, p);
  } else {
    Launch(RmsNormQuantizeKernel<false>, grid, threads, 0, stream, p);
  }
}

void Binary(const BinaryParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.cols == 0) return;
  auto float_like = [](ElemType t) { return t == ElemType::kF32 || t == ElemType::kBF16; };
  if (float_like(p.a_type) && float_like(p.b_type) && float_like(p.out_type) &&
      Vectorizable(p.cols, {{p.a, p.a_stride}, {p.b, p.b_stride}, {p.out, p.out_stride}})) {
    const dim3 grid(CeilDiv(p.cols, 256 * 8), static_cast<unsigned>(p.rows));
    Launch(BinaryKernel<true>, grid, 256, 0, stream, p);
  } else {
    const dim3 grid(CeilDiv(p.cols, 256 * 4), static_cast<unsigned>(p.rows));
    Launch(BinaryKernel<false>, grid, 256, 0, stream, p);
  }
}

void GatherRows(const GatherRowsParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  if (p.type == ElemType::kBF16) {
    Launch(GatherRowsKernel<bf16>, static_cast<unsigned>(p.n), 256, 0, stream, p);
  } else {
    Launch(GatherRowsKernel<float>, static_cast<unsigned>(p.n), 256, 0, stream, p);
  }
}

void ScatterSumRows(const ScatterSumRowsParams& p, cudaStream_t stream) {
  if (p.n == 0 || p.cols == 0) return;
  const dim3 grid(CeilDiv(p.cols, 256), static_cast<unsigned>(p.n));
  Launch(ScatterSumRowsKernel, grid, 256, 0, stream, p);
}

void PadRows(const PadRowsParams& p, cudaStream_t stream) {
  if (p.out_rows == 0 || p.cols == 0) return;
  const dim3 grid(CeilDiv(p.cols, 256), static_cast<unsigned>(p.out_rows));
  if (p.elem_bytes == 2) {
    Launch(PadRowsKernel<uint16_t>, grid, 256, 0, stream, p);
  } else {
    Launch(PadRowsKernel<uint32_t>, grid, 256, 0, stream, p);
  }
}

void SumRowBlocks(const SumRowBlocksParams& p, cudaStream_t stream) {
  if (p.n == 0 || p.cols == 0) return;
  const dim3 grid(CeilDiv(p.cols, 256), static_cast<unsigned>(p.n));
  Launch(SumRowBlocksKernel, grid, 256, 0, stream, p);
}

void Rope(const RopeParams& p, cudaStream_t stream) {
  const int64_t groups = (p.heads + kRopeHeadsPerThread - 1) / kRopeHeadsPerThread;
  const int64_t n = p.tokens * groups * (p.rope_dim / 2);
  if (n == 0) return;
  Launch(RopeKernel, CeilDiv(n, 256), 256, 0, stream, p);
}

void Copy2D(const Copy2DParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.cols == 0) return;
  const dim3 grid(CeilDiv(p.cols, 256 * 4), static_cast<unsigned>(p.rows));
  Launch(Copy2DKernel, grid, 256, 0, stream, p);
}

void RandomFill(const RandomFillParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(CeilDiv(p.n, 256), 132 * 16));
  Launch(RandomFillKernel, blocks, 256, 0, stream, p);
}

}  // namespace dsv3::kernels
