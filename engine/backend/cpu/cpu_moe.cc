// MoE on the CPU: noaux_tc routing (SPEC section 3) and the routed experts, one GEMM chain per
// active expert over the tokens routed to it.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"

namespace dsv3 {

void CpuBackend::MoeRoute(const TensorView& x, const TensorView& router, const TensorView& bias,
                          const MoeRouteParams& p, const TensorView& topk_ids,
                          const TensorView& topk_weights) {
  const int64_t tokens = x.dim(0), e = p.num_experts, group_size = e / p.num_groups;
  std::vector<float> logits(tokens * e);
  SgemmNT(tokens, e, x.dim(1), x.ptr<float>(), x.strides[0], router.ptr<float>(),
          router.strides[0], logits.data(), e);
  const float* b = bias.ptr<float>();
  std::vector<float> s(e), choice(e), group_score(p.num_groups);
  std::vector<int32_t> order(std::max(e, p.num_groups));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < e; ++j) {
      s[j] = 1.0f / (1.0f + std::exp(-logits[t * e + j]));
      choice[j] = s[j] + b[j];
    }
    // A group's score: the sum of its two best corrected scores.
    for (int64_t g = 0; g < p.num_groups; ++g) {
      const float* c = &choice[g * group_size];
      float best = -INFINITY, second = -INFINITY;
      for (int64_t j = 0; j < group_size; ++j) {
        if (c[j] > best) {
          second = best;
          best = c[j];
        } else if (c[j] > second) {
          second = c[j];
        }
      }
      group_score[g] = group_size >= 2 ? best + second : best;
    }
    std::iota(order.begin(), order.begin() + p.num_groups, 0);
    std::partial_sort(order.begin(), order.begin() + p.topk_groups, order.begin() + p.num_groups,
                      [&](int32_t a, int32_t c) {
                        return group_score[a] > group_score[c] ||
                               (group_score[a] == group_score[c] && a < c);
                      });
    std::vector<bool> keep(p.num_groups, false);
    for (int64_t g = 0; g < p.topk_groups; ++g) keep[order[g]] = true;
    for (int64_t j = 0; j < e; ++j) {
      if (!keep[j / group_size]) choice[j] = -INFINITY;
    }
    std::iota(order.begin(), order.begin() + e, 0);
    std::partial_sort(order.begin(), order.begin() + p.top_k, order.begin() + e,
                      [&](int32_t a, int32_t c) {
                        return choice[a] > choice[c] || (choice[a] == choice[c] && a < c);
                      });
    int32_t* ids = topk_ids.ptr<int32_t>() + t * topk_ids.strides[0];
    float* w = topk_weights.ptr<float>() + t * topk_weights.strides[0];
    float sum = 0;
    for (int64_t j = 0; j < p.top_k; ++j) {
      ids[j] = order[j];
      w[j] = s[order[j]];
      sum += w[j];
    }
    // Weights come from the uncorrected scores (the bias only steers the choice).
    const float denom = p.norm_topk_prob ? sum + 1e-20f : 1.0f;
    for (int64_t j = 0; j < p.top_k; ++j) w[j] = w[j] / denom * p.routed_scaling_factor;
  }
}

void CpuBackend::MoeExperts(const TensorView& x, const TensorView& topk_ids,
                            const TensorView& topk_weights, std::span<const ExpertWeights> experts,
                            int64_t expert_begin, const TensorView& out) {
  MoeExpertsOneByOne(*this, x, topk_ids, topk_weights, experts, expert_begin, out,
                     [](float v) { return v; });
}

void MoeExpertsOneByOne(Backend& ops, const TensorView& x, const TensorView& topk_ids,
                        const TensorView& topk_weights, std::span<const ExpertWeights> experts,
                        int64_t expert_begin, const TensorView& out,
                        float (*expert_output)(float)) {
  const int64_t tokens = x.dim(0), h = x.dim(1), k = topk_ids.dim(1);
  for (int64_t t = 0; t < tokens; ++t) {
    std::fill(out.ptr<float>() + t * out.strides[0], out.ptr<float>() + t * out.strides[0] + h,
              0.0f);
  }
  // Tokens per local expert, in token order (the reference accumulates expert by expert).
  std::vector<std::vector<std::pair<int32_t, float>>> routed(experts.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t local = topk_ids.ptr<int32_t>()[t * topk_ids.strides[0] + j] - expert_begin;
      if (local >= 0 && local < static_cast<int64_t>(experts.size())) {
        routed[local].emplace_back(static_cast<int32_t>(t),
                                   topk_weights.ptr<float>()[t * topk_weights.strides[0] + j]);
      }
    }
  }
  std::vector<float> xe, gate, up, y;
  for (size_t e = 0; e < experts.size(); ++e) {
    const auto& rows = routed[e];
    if (rows.empty()) continue;
    const int64_t n = static_cast<int64_t>(rows.size()), inter = experts[e].gate.n();
    xe.resize(n * h);
    gate.resize(n * inter);
    up.resize(n * inter);
    y.resize(n * h);
    for (int64_t r = 0; r < n; ++r) {
      std::copy_n(x.ptr<float>() + rows[r].first * x.strides[0], h, &xe[r * h]);
    }
    const TensorView xv = TensorView::Contiguous(xe.data(), DType::kF32, {n, h});
    const TensorView gv = TensorView::Contiguous(gate.data(), DType::kF32, {n, inter});
    const TensorView uv = TensorView::Contiguous(up.data(), DType::kF32, {n, inter});
    const TensorView yv = TensorView::Contiguous(y.data(), DType::kF32, {n, h});
    ops.Linear(xv, experts[e].gate, gv);
    ops.Linear(xv, experts[e].up, uv);
    ops.SiluMul(gv, uv, gv);
    ops.Linear(gv, experts[e].down, yv);
    for (int64_t r = 0; r < n; ++r) {
      float* o = out.ptr<float>() + rows[r].first * out.strides[0];
      const float w = rows[r].second;
      for (int64_t d = 0; d < h; ++d) o[d] += expert_output(y[r * h + d]) * w;
    }
  }
}

}  // namespace dsv3
