// MLA over the paged latent cache on the CPU, in both forms of SPEC section 3:
// naive (up-project cached latents to per-head K/V; good for many new tokens) and absorbed
// (fold W_UK into the query and W_UV into the output, attend over the latents; good for decode).
// Matmuls go through OpenBLAS and are batched over all rows that share a weight; only the
// per-(sequence, head) softmax loops run on the thread pool.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"

namespace dsv3 {

namespace {

// Row `pos` of one sequence in the paged cache [num_blocks, block_size, kv_dim].
const float* CacheRow(const TensorView& cache, const AttentionBatch::Sequence& seq,
                      int32_t block_size, int64_t pos) {
  const int32_t block = seq.block_table[pos / block_size];
  return cache.ptr<float>() + block * cache.strides[0] + (pos % block_size) * cache.dim(2);
}

// The cache rows of positions [0, n) gathered contiguous: [n, kv_dim].
std::vector<float> GatherContext(const TensorView& cache, const AttentionBatch::Sequence& seq,
                                 int32_t block_size, int64_t n) {
  const int64_t kv_dim = cache.dim(2);
  std::vector<float> out(n * kv_dim);
  for (int64_t p = 0; p < n; ++p) {
    std::memcpy(&out[p * kv_dim], CacheRow(cache, seq, block_size, p), sizeof(float) * kv_dim);
  }
  return out;
}

// Softmax over scores[0, n) in place, max-subtracted.
void SoftmaxInPlace(float* scores, int64_t n) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, scores[j]);
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) scores[j] *= inv;
}

// Eight independent partial sums let the compiler vectorize without reassociation flags.
float Dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

bool UsesAbsorbed(MlaMode mode, const AttentionBatch::Sequence& seq) {
  return mode == MlaMode::kAbsorbed || (mode == MlaMode::kAuto && seq.num_tokens == 1);
}

}  // namespace

void CpuBackend::WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                              const TensorView& cache) {
  const int64_t kv_dim = latent.dim(1);
  assert(cache.dim(2) == kv_dim);
  for (size_t t = 0; t < batch.slot_mapping.size(); ++t) {
    float* dst = cache.ptr<float>() + batch.slot_mapping[t] * kv_dim;
    const float* src = latent.ptr<float>() + t * latent.strides[0];
    std::copy(src, src + kv_dim, dst);
  }
}

void CpuBackend::MlaAttention(const TensorView& q, const TensorView& cache,
                              const LinearWeight& kv_b, const AttentionBatch& batch,
                              const MlaParams& p, const TensorView& out) {
  const int64_t nh = p.num_heads, nope = p.nope_dim, rope = p.rope_dim, vd = p.v_dim;
  const int64_t lora = p.kv_lora_rank, kv_dim = lora + rope, head_rows = nope + vd;
  const float* wkvb = kv_b.weight.ptr<float>();  // [nh * (nope + v), lora]
  const int32_t bs = batch.block_size;

  // ---- Absorbed: every row of the absorbed sequences at once. -------------------------------
  std::vector<const AttentionBatch::Sequence*> absorbed;
  std::vector<int64_t> rows;  // batch rows of the absorbed sequences, in order
  for (const auto& seq : batch.sequences) {
    if (!UsesAbsorbed(p.mode, seq)) continue;
    absorbed.push_back(&seq);
    for (int32_t i = 0; i < seq.num_tokens; ++i) rows.push_back(seq.token_begin + i);
  }
  if (!absorbed.empty()) {
    const int64_t r = static_cast<int64_t>(rows.size());
    std::vector<float> qg(r * nh * (nope + rope));  // [R, nh, nope + rope]
    for (int64_t i = 0; i < r; ++i) {
      for (int64_t h = 0; h < nh; ++h) {
        std::memcpy(&qg[(i * nh + h) * (nope + rope)],
                    q.ptr<float>() + rows[i] * q.strides[0] + h * q.strides[1],
                    sizeof(float) * (nope + rope));
      }
    }
    // q_lat[i, h] = q_nope[i, h] . W_UK_h: [R, nope] x [nope, lora] per head.
    std::vector<float> q_lat(r * nh * lora), o_lat(r * nh * lora);
    for (int64_t h = 0; h < nh; ++h) {
      SgemmNN(r, lora, nope, &qg[h * (nope + rope)], nh * (nope + rope),
              wkvb + h * head_rows * lora, lora, &q_lat[h * lora], nh * lora);
    }
    // Row offsets of each absorbed sequence inside `rows`.
    std::vector<int64_t> first(absorbed.size());
    for (size_t s = 1; s < absorbed.size(); ++s) first[s] = first[s - 1] + absorbed[s - 1]->num_tokens;
    pool_.ParallelFor(static_cast<int64_t>(absorbed.size()) * nh, [&](int64_t item) {
      const auto& seq = *absorbed[item / nh];
      const int64_t h = item % nh;
      std::vector<float> scores(seq.context_begin + seq.num_tokens);
      for (int64_t i = 0; i < seq.num_tokens; ++i) {
        const int64_t row = first[item / nh] + i;
        const float* ql = &q_lat[(row * nh + h) * lora];
        const float* qpe = &qg[(row * nh + h) * (nope + rope) + nope];
        const int64_t visible = seq.context_begin + i + 1;  // causal
        for (int64_t j = 0; j < visible; ++j) {
          const float* c = CacheRow(cache, seq, bs, j);
          scores[j] = (Dot(ql, c, lora) + Dot(qpe, c + lora, rope)) * p.softmax_scale;
        }
        SoftmaxInPlace(scores.data(), visible);
        float* o = &o_lat[(row * nh + h) * lora];
        std::fill(o, o + lora, 0.0f);
        for (int64_t j = 0; j < visible; ++j) {
          const float* c = CacheRow(cache, seq, bs, j);
          const float w = scores[j];
          for (int64_t d = 0; d < lora; ++d) o[d] += w * c[d];
        }
      }
    });
    // out[i, h] = o_lat[i, h] . W_UV_h^T, computed for all rows, then scattered.
    std::vector<float> og(r * nh * vd);  // [R, nh * v]
    for (int64_t h = 0; h < nh; ++h) {
      SgemmNT(r, vd, lora, &o_lat[h * lora], nh * lora, wkvb + (h * head_rows + nope) * lora, lora,
              &og[h * vd], nh * vd);
    }
    for (int64_t i = 0; i < r; ++i) {
      std::memcpy(out.ptr<float>() + rows[i] * out.strides[0], &og[i * nh * vd],
                  sizeof(float) * nh * vd);
    }
  }

  // ---- Naive: one sequence at a time, K and V up-projected for its whole context. ------------
  for (const auto& seq : batch.sequences) {
    if (UsesAbsorbed(p.mode, seq)) continue;
    const int64_t n = seq.num_tokens, ctx = seq.context_begin + n;
    const std::vector<float> latents = GatherContext(cache, seq, bs, ctx);  // [ctx, kv_dim]
    // kv [ctx, nh * (nope + v)] = c [ctx, lora] . kv_b^T
    std::vector<float> kv(ctx * nh * head_rows);
    SgemmNT(ctx, nh * head_rows, lora, latents.data(), kv_dim, wkvb, lora, kv.data(),
            nh * head_rows);
    const float* q0 = q.ptr<float>() + seq.token_begin * q.strides[0];
    float* out0 = out.ptr<float>() + seq.token_begin * out.strides[0];
    std::vector<float> scores(n * ctx);  // [n, ctx]
    for (int64_t h = 0; h < nh; ++h) {
      // scores = q_nope_h k_nope_h^T + q_pe_h k_pe^T
      SgemmNT(n, ctx, nope, q0 + h * q.strides[1], q.strides[0], &kv[h * head_rows],
              nh * head_rows, scores.data(), ctx);
      SgemmNT(n, ctx, rope, q0 + h * q.strides[1] + nope, q.strides[0], &latents[lora], kv_dim,
              scores.data(), ctx, /*beta=*/1.0f);
      pool_.ParallelFor(n, [&](int64_t i) {
        float* row = &scores[i * ctx];
        const int64_t visible = seq.context_begin + i + 1;  // causal
        for (int64_t j = 0; j < visible; ++j) row[j] *= p.softmax_scale;
        SoftmaxInPlace(row, visible);
        std::fill(row + visible, row + ctx, 0.0f);
      });
      // out_h [n, v] = probabilities [n, ctx] . v_h [ctx, v]
      SgemmNN(n, vd, ctx, scores.data(), ctx, &kv[h * head_rows + nope], nh * head_rows,
              out0 + h * vd, out.strides[0]);
    }
  }
}

}  // namespace dsv3
