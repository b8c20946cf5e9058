#include "kernels/attention_gemm.cuh"
#include "kernels/device_utils.cuh"
#include "kernels/launch.cuh"

namespace dsv3::kernels {

namespace {

// Copies n BF16 values, 8 at a time when both ends are 16-byte aligned, shared by `threads`
// threads of which the caller is number `first` (a block: threadIdx.x of blockDim.x; a warp:
// its lane of 32).
__device__ __forceinline__ void CopyRow(const bf16* src, bf16* dst, int64_t n, int first,
                                        int threads) {
  const bool vec = n % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (vec) {
    for (int64_t i = first; i < n / 8; i += threads) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
    }
  } else {
    for (int64_t i = first; i < n; i += threads) dst[i] = src[i];
  }
}

// Block (kGatherRows keys, item), one warp per key row: a row is only kv_dim * 2 bytes (1152 for
// V3), so a block per row would spend more on scheduling than on copying.
constexpr int kGatherRows = 8;
__global__ void GatherLatentsKernel(GatherLatentsParams p) {
  KernelPrologue();
  const int64_t i = blockIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kGatherRows + threadIdx.x / 32;
  if (j >= p.max_context) return;
  const int lane = threadIdx.x % 32;
  const MlaGemmItem item = p.items[i];
  bf16* dst = static_cast<bf16*>(p.latents) + (i * p.max_context + j) * p.kv_dim;
  if (j >= item.context) {
    for (int64_t e = lane; e < p.kv_dim; e += 32) dst[e] = FromFloat<bf16>(0.0f);
    return;
  }
  const int64_t slot =
      static_cast<int64_t>(p.block_tables[item.table_offset + j / p.block_size]) * p.block_size +
      j % p.block_size;
  CopyRow(static_cast<const bf16*>(p.cache) + slot * p.kv_dim, dst, p.kv_dim, lane, 32);
}

// Block (head, item).
__global__ void GatherQueryKernel(GatherQueryParams p) {
  KernelPrologue();
  const int64_t h = blockIdx.x, i = blockIdx.y;
  const int64_t row = p.items[i].token_row;
  bf16* dst = static_cast<bf16*>(p.query) + (i * p.heads + h) * (p.a_dim + p.b_dim);
  const bf16* a = static_cast<const bf16*>(p.a) + row * p.a_token_stride + h * p.a_head_stride;
  const bf16* b = static_cast<const bf16*>(p.b) + row * p.b_token_stride + h * p.b_head_stride;
  for (int64_t e = threadIdx.x; e < p.a_dim; e += blockDim.x) dst[e] = a[e];
  for (int64_t e = threadIdx.x; e < p.b_dim; e += blockDim.x) dst[p.a_dim + e] = b[e];
}

// One block per row: max, then sum of exponentials, then the normalized BF16 row.
__global__ void MaskedSoftmaxKernel(MaskedSoftmaxParams p) {
  KernelPrologue();
  const int64_t r = blockIdx.x;
  const int64_t valid = p.items != nullptr ? p.items[r / p.heads].context
                                           : p.causal_begin + r % p.causal_period + 1;
  const float* s = p.scores + r * p.ld;
  bf16* out = static_cast<bf16*>(p.probs) + r * p.ld;
  __shared__ float shared_max[32];
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) m = fmaxf(m, s[j]);
  m = WarpMax(m);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared_max[warp] = m;
  __syncthreads();
  m = lane < static_cast<int>(blockDim.x / 32) ? shared_max[lane] : -INFINITY;
  m = WarpMax(m);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) sum += __expf((s[j] - m) * p.scale);
  const float inv = 1.0f / BlockSum(sum);
  for (int64_t j = threadIdx.x; j < p.ld; j += blockDim.x) {
    out[j] = FromFloat<bf16>(j < valid ? __expf((s[j] - m) * p.scale) * inv : 0.0f);
  }
}

__global__ void ScatterItemRowsKernel(ScatterItemRowsParams p) {
  KernelPrologue();
  const int64_t i = blockIdx.x;
  CopyRow(static_cast<const bf16*>(p.src) + i * p.src_stride,
          static_cast<bf16*>(p.dst) + static_cast<int64_t>(p.items[i].token_row) * p.dst_stride,
          p.cols, threadIdx.x, blockDim.x);
}

// Block (row, head).
__global__ void AssembleKeysKernel(AssembleKeysParams p) {
  KernelPrologue();
  const int64_t r = blockIdx.x, h = blockIdx.y;
  bf16* dst = static_cast<bf16*>(p.keys) + (r * p.heads + h) * (p.nope + p.rope);
  const bf16* k = static_cast<const bf16*>(p.kv) + r * p.kv_row_stride + h * p.kv_head_stride;
  const bf16* pe = static_cast<const bf16*>(p.latents) + r * p.latent_stride + p.rope_offset;
  for (int64_t e = threadIdx.x; e < p.nope; e += blockDim.x) dst[e] = k[e];
  for (int64_t e = threadIdx.x; e < p.rope; e += blockDim.x) dst[p.nope + e] = pe[e];
}

}  // namespace

void GatherLatents(const GatherLatentsParams& p, cudaStream_t stream) {
  if (p.num_items == 0 || p.max_context == 0) return;
  Launch(GatherLatentsKernel,
         dim3(static_cast<unsigned>(CeilDiv(p.max_context, kGatherRows)),
              static_cast<unsigned>(p.num_items)),
         kGatherRows * 32, 0, stream, p);
}

void GatherQuery(const GatherQueryParams& p, cudaStream_t stream) {
  if (p.num_items == 0) return;
  Launch(GatherQueryKernel,
         dim3(static_cast<unsigned>(p.heads), static_cast<unsigned>(p.num_items)), 128, 0, stream,
         p);
}

void MaskedSoftmax(const MaskedSoftmaxParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  Launch(MaskedSoftmaxKernel, static_cast<unsigned>(p.rows), 256, 0, stream, p);
}

void ScatterItemRows(const ScatterItemRowsParams& p, cudaStream_t stream) {
  if (p.num_items == 0) return;
  Launch(ScatterItemRowsKernel, static_cast<unsigned>(p.num_items), 256, 0, stream, p);
}

void AssembleKeys(const AssembleKeysParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  Launch(AssembleKeysKernel, dim3(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.heads)),
         64, 0, stream, p);
}

}  // namespace dsv3::kernels
