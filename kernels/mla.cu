#include "kernels/device_utils.cuh"
#include "kernels/launch.cuh"
#include "kernels/mla.cuh"

namespace dsv3::kernels {

namespace {

__global__ void WriteKvCacheKernel(WriteKvCacheParams p) {
  KernelPrologue();
  const int64_t t = blockIdx.x;
  const bf16* src = static_cast<const bf16*>(p.latent) + t * p.latent_stride;
  bf16* dst = static_cast<bf16*>(p.cache) + p.slot_mapping[t] * p.kv_dim;
  for (int64_t i = threadIdx.x; i < p.kv_dim; i += blockDim.x) dst[i] = src[i];
}

constexpr int kHeadsPerBlock = 4;  // one warp per head; the block's heads share cache rows in L1
constexpr int kMaxQ = 640;
constexpr int kMaxV = 512;

// One warp per (token, head), one key at a time with an online softmax. Simple and exact; the
// decode-speed kernel (all heads of a sequence per block, tensor cores) replaces it for decode.
__global__ void __launch_bounds__(kHeadsPerBlock * 32) MlaAttentionKernel(MlaAttentionParams p) {
  KernelPrologue();
  __shared__ float q_smem[kHeadsPerBlock][kMaxQ];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t t = p.token_rows[blockIdx.y];
  const int64_t h = static_cast<int64_t>(blockIdx.x) * kHeadsPerBlock + warp;
  if (h >= p.heads) return;

  float* q = q_smem[warp];
  const bf16* qa = static_cast<const bf16*>(p.q_a) + t * p.q_a_token_stride + h * p.q_a_head_stride;
  const bf16* qb = static_cast<const bf16*>(p.q_b) + t * p.q_b_token_stride + h * p.q_b_head_stride;
  for (int e = lane; e < p.da; e += 32) q[e] = ToFloat(qa[e]);
  for (int e = lane; e < p.db; e += 32) q[p.da + e] = ToFloat(qb[e]);
  __syncwarp();

  const MlaSequence seq = p.sequences[p.token_seq[t]];
  const int64_t visible = seq.context_begin + (t - seq.token_begin) + 1;
  const int64_t chunk = (visible + p.splits - 1) / p.splits;
  const int64_t j_begin = blockIdx.z * chunk, j_end = min(visible, j_begin + chunk);
  const int32_t* table = p.block_tables + seq.table_offset;
  const bf16* cache = static_cast<const bf16*>(p.cache);
  const bf16* dense = static_cast<const bf16*>(p.dense_kv);

  float m = -INFINITY, l = 0.0f;
  float acc[kMaxV / 32];
#pragma unroll
  for (int i = 0; i < kMaxV / 32; ++i) acc[i] = 0.0f;

  for (int64_t j = j_begin; j < j_end; ++j) {
    const int64_t slot =
        static_cast<int64_t>(table[j / p.block_size]) * p.block_size + j % p.block_size;
    const bf16* row = cache + slot * p.kv_dim;
    const bf16* ka = dense == nullptr
                         ? row
                         : dense + (seq.dense_offset + j) * p.dense_row_stride + h * p.dense_head_stride;
    const bf16* v = dense == nullptr ? row : ka + p.dense_v_offset;
    const bf16* kb = row + p.kpe_offset;
    float dot = 0.0f;
    for (int e = lane; e < p.da; e += 32) dot += q[e] * ToFloat(ka[e]);
    for (int e = lane; e < p.db; e += 32) dot += q[p.da + e] * ToFloat(kb[e]);
    const float score = WarpSum(dot) * p.scale;
    const float m_new = fmaxf(m, score);
    const float correction = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float weight = expf(score - m_new);
    l = l * correction + weight;
    m = m_new;
#pragma unroll
    for (int i = 0; i < kMaxV / 32; ++i) {
      const int e = lane + 32 * i;
      if (e < p.dv) acc[i] = acc[i] * correction + weight * ToFloat(v[e]);
    }
  }
  if (p.splits > 1) {  // this range's (max, sum, unnormalized output); empty: (-inf, 0, 0)
    float* part =
        p.partial + ((static_cast<int64_t>(blockIdx.y) * p.heads + h) * p.splits + blockIdx.z) *
                        (2 + p.dv);
    if (lane == 0) {
      part[0] = m;
      part[1] = l;
    }
#pragma unroll
    for (int i = 0; i < kMaxV / 32; ++i) {
      const int e = lane + 32 * i;
      if (e < p.dv) part[2 + e] = acc[i];
    }
    return;
  }
  bf16* out = static_cast<bf16*>(p.out) + t * p.out_token_stride + h * p.out_head_stride;
  const float inv = 1.0f / l;
#pragma unroll
  for (int i = 0; i < kMaxV / 32; ++i) {
    const int e = lane + 32 * i;
    if (e < p.dv) out[e] = FromFloat<bf16>(acc[i] * inv);
  }
}

// One block per (head, token row): out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s.
__global__ void MlaMergeSplitsKernel(MlaAttentionParams p) {
  KernelPrologue();
  const int64_t h = blockIdx.x, row = blockIdx.y, t = p.token_rows[row];
  const float* part = p.partial + (row * p.heads + h) * p.splits * (2 + p.dv);
  float m = -INFINITY;
  for (int s = 0; s < p.splits; ++s) m = fmaxf(m, part[s * (2 + p.dv)]);
  float l = 0.0f;
  for (int s = 0; s < p.splits; ++s) {
    l += expf(part[s * (2 + p.dv)] - m) * part[s * (2 + p.dv) + 1];
  }
  bf16* out = static_cast<bf16*>(p.out) + t * p.out_token_stride + h * p.out_head_stride;
  for (int e = threadIdx.x; e < p.dv; e += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      acc += expf(part[s * (2 + p.dv)] - m) * part[s * (2 + p.dv) + 2 + e];
    }
    out[e] = FromFloat<bf16>(acc / l);
  }
}

}  // namespace

void WriteKvCache(const WriteKvCacheParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  Launch(WriteKvCacheKernel, static_cast<unsigned>(p.tokens), 128, 0, stream, p);
}

void MlaAttention(const MlaAttentionParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  const dim3 grid(CeilDiv(p.heads, kHeadsPerBlock), static_cast<unsigned>(p.tokens),
                  static_cast<unsigned>(p.splits));
  Launch(MlaAttentionKernel, grid, kHeadsPerBlock * 32, 0, stream, p);
  if (p.splits > 1) {
    Launch(MlaMergeSplitsKernel,
           dim3(static_cast<unsigned>(p.heads), static_cast<unsigned>(p.tokens)), 128, 0, stream,
           p);
  }
}

}  // namespace dsv3::kernels
