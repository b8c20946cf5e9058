// MLA over the paged latent cache on the CPU, in both forms of SPEC section 3:
// naive (up-project cached latents to per-head K/V) and absorbed (attend over the latents).
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"

namespace dsv3 {

namespace {

// The cache rows of one sequence's positions [0, n), gathered contiguous: [n, kv_dim].
std::vector<float> GatherContext(const TensorView& cache, const AttentionBatch::Sequence& seq,
                                 int32_t block_size, int64_t n) {
  const int64_t kv_dim = cache.dim(2);
  std::vector<float> out(n * kv_dim);
  for (int64_t p = 0; p < n; ++p) {
    const int32_t block = seq.block_table[p / block_size];
    const float* src = cache.ptr<float>() + block * cache.strides[0] + (p % block_size) * kv_dim;
    std::memcpy(&out[p * kv_dim], src, sizeof(float) * kv_dim);
  }
  return out;
}

// Softmax over scores[0, n) in place (max-subtracted, float32 like the reference).
void SoftmaxInPlace(float* scores, int64_t n) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, scores[j]);
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) scores[j] *= inv;
}

float Dot(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void CpuBackend::WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                              const TensorView& cache) {
  const int64_t kv_dim = latent.dim(1);
  assert(cache.dim(2) == kv_dim);
  for (size_t t = 0; t < batch.slot_mapping.size(); ++t) {
    std::memcpy(cache.ptr<float>() + batch.slot_mapping[t] * kv_dim,
                latent.ptr<float>() + t * latent.strides[0], sizeof(float) * kv_dim);
  }
}

void CpuBackend::MlaAttention(const TensorView& q, const TensorView& cache,
                              const LinearWeight& kv_b, const AttentionBatch& batch,
                              const MlaParams& p, const TensorView& out) {
  const int64_t nh = p.num_heads, nope = p.nope_dim, rope = p.rope_dim, vd = p.v_dim;
  const int64_t lora = p.kv_lora_rank, kv_dim = lora + rope;
  const float* wkvb = kv_b.weight.ptr<float>();  // [nh * (nope + v), lora]
  const int64_t head_rows = nope + vd;

  for (const auto& seq : batch.sequences) {
    const int64_t ctx = seq.context_begin + seq.num_tokens;
    const std::vector<float> latents = GatherContext(cache, seq, batch.block_size, ctx);
    const bool naive = p.mode == MlaMode::kNaive || (p.mode == MlaMode::kAuto && seq.num_tokens > 1);
    const float* q0 = q.ptr<float>() + seq.token_begin * q.strides[0];
    float* out0 = out.ptr<float>() + seq.token_begin * out.strides[0];

    if (naive) {
      // kv: [ctx, nh * (nope + v)] = latents_c [ctx, lora] . kv_b^T
      std::vector<float> kv(ctx * nh * head_rows);
      SgemmNT(ctx, nh * head_rows, lora, latents.data(), kv_dim, wkvb, lora, kv.data(),
              nh * head_rows);
      pool_.ParallelFor(nh, [&](int64_t h) {
        std::vector<float> scores(ctx);
        for (int64_t i = 0; i < seq.num_tokens; ++i) {
          const float* qi = q0 + i * q.strides[0] + h * q.strides[1];
          const int64_t visible = seq.context_begin + i + 1;  // causal
          for (int64_t j = 0; j < visible; ++j) {
            const float* k_nope = &kv[j * nh * head_rows + h * head_rows];
            const float* k_pe = &latents[j * kv_dim + lora];
            scores[j] = (Dot(qi, k_nope, nope) + Dot(qi + nope, k_pe, rope)) * p.softmax_scale;
          }
          SoftmaxInPlace(scores.data(), visible);
          float* o = out0 + i * out.strides[0] + h * vd;
          std::fill(o, o + vd, 0.0f);
          for (int64_t j = 0; j < visible; ++j) {
            const float* v = &kv[j * nh * head_rows + h * head_rows + nope];
            for (int64_t d = 0; d < vd; ++d) o[d] += scores[j] * v[d];
          }
        }
      });
      continue;
    }

    // Absorbed: q_lat[i, h] = q_nope[i, h] . W_UK_h  ([nope] x [nope, lora]).
    const int64_t n = seq.num_tokens;
    std::vector<float> q_lat(n * nh * lora), o_lat(n * nh * lora);
    for (int64_t h = 0; h < nh; ++h) {
      SgemmNN(n, lora, nope, q0 + h * q.strides[1], q.strides[0], wkvb + h * head_rows * lora,
              lora, &q_lat[h * lora], nh * lora);
    }
    pool_.ParallelFor(nh, [&](int64_t h) {
      std::vector<float> scores(ctx);
      for (int64_t i = 0; i < n; ++i) {
        const float* ql = &q_lat[(i * nh + h) * lora];
        const float* qpe = q0 + i * q.strides[0] + h * q.strides[1] + nope;
        const int64_t visible = seq.context_begin + i + 1;
        for (int64_t j = 0; j < visible; ++j) {
          const float* c = &latents[j * kv_dim];
          scores[j] = (Dot(ql, c, lora) + Dot(qpe, c + lora, rope)) * p.softmax_scale;
        }
        SoftmaxInPlace(scores.data(), visible);
        float* o = &o_lat[(i * nh + h) * lora];
        std::fill(o, o + lora, 0.0f);
        for (int64_t j = 0; j < visible; ++j) {
          const float* c = &latents[j * kv_dim];
          for (int64_t d = 0; d < lora; ++d) o[d] += scores[j] * c[d];
        }
      }
    });
    // out[i, h] = o_lat[i, h] . W_UV_h^T  ([lora] x [v, lora]^T).
    for (int64_t h = 0; h < nh; ++h) {
      SgemmNT(n, vd, lora, &o_lat[h * lora], nh * lora, wkvb + (h * head_rows + nope) * lora,
              lora, out0 + h * vd, out.strides[0]);
    }
  }
}

}  // namespace dsv3
