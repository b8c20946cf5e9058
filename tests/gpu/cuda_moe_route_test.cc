// The router (CudaBackend::MoeRoute) against a host reference in double from the same BF16
// inputs. Steps of at most 8 tokens take the fused kernel (kernels::MoeRouterTopk: the router
// GEMV whose last block selects), larger ones the router GEMM and MoeTopk (ranks up to 256
// tokens, beyond them a warp per token with the fused kernel's selection). An id must match
// wherever the reference's pick is decisive (its choice score, and the kept groups' scores, more
// than kTieGap from the next); weights within kWeightTol relative where the chosen set is. The
// fused kernel's one-token selection (the whole block) must give the bits of its warp-per-token
// one, ties included. Its ticket must return to 0 by itself: the same call twice, and two calls
// captured in a CUDA graph with PDL and replayed three times, give the same bits.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/timing_hooks.h"
#include "kernels/programmatic_launch.h"
#include "tests/gpu/gpu_test_util.h"

namespace dsv3 {
namespace {

using testing::CopyIn;
using testing::CopyOut;
using testing::Poison;
using testing::RandomBf16;

constexpr double kTieGap = 1e-3;
constexpr double kWeightTol = 1e-5;
constexpr char kFusedPath[] = "- moe route: fused router kernel";
constexpr char kGemmPath[] = "- moe route: GEMM + top-k";

struct RouteShape {
  const char* name;
  int64_t experts, hidden, top_k, groups, topk_groups;
  bool norm_topk_prob;
  float scaling;
  MoeRouteParams params() const {
    return {experts, top_k, groups, topk_groups, norm_topk_prob, scaling};
  }
};
constexpr RouteShape kV3{"v3", 256, 7168, 8, 8, 4, true, 2.5f};
constexpr RouteShape kSmall{"small", 64, 2048, 6, 1, 1, false, 1.0f};

// One route's inputs: host values (BF16-exact x and router, F32 bias) and their device copies.
struct RouteInputs {
  int64_t tokens = 0;
  std::vector<float> x, router, bias;  // [T, H], [E, H], [E]
  Tensor dx, drouter, dbias;
};

// One token's routing by the reference.
struct RefToken {
  std::vector<int32_t> ids;       // [top_k], in pick order
  std::vector<bool> id_decisive;  // [top_k]: the pick is more than kTieGap from its neighbours
  bool set_decisive = false;      // the kept groups and the chosen set are
  std::vector<double> s;          // [E] sigmoid scores
  double denom = 1.0;             // the weights' normalizer
};

// The reference's selection (the CPU backend's, cpu_moe.cc) on logits summed in double.
std::vector<RefToken> Reference(const RouteShape& sh, const RouteInputs& in) {
  const int64_t e_count = sh.experts, h = sh.hidden, group_size = e_count / sh.groups;
  std::vector<RefToken> out(in.tokens);
  for (int64_t t = 0; t < in.tokens; ++t) {
    RefToken& r = out[t];
    r.s.resize(e_count);
    std::vector<double> c(e_count);
    for (int64_t e = 0; e < e_count; ++e) {
      double logit = 0;
      for (int64_t k = 0; k < h; ++k) {
        logit += static_cast<double>(in.x[t * h + k]) * in.router[e * h + k];
      }
      r.s[e] = 1.0 / (1.0 + std::exp(-logit));
      c[e] = r.s[e] + in.bias[e];
    }
    std::vector<double> group_score(sh.groups);
    for (int64_t g = 0; g < sh.groups; ++g) {
      std::vector<double> v(c.begin() + g * group_size, c.begin() + (g + 1) * group_size);
      std::sort(v.begin(), v.end(), std::greater<>());
      group_score[g] = group_size >= 2 ? v[0] + v[1] : v[0];
    }
    // Stable sorts by descending score: ties keep the lower index first.
    std::vector<int32_t> groups(sh.groups);
    std::iota(groups.begin(), groups.end(), 0);
    std::stable_sort(groups.begin(), groups.end(),
                     [&](int32_t a, int32_t b) { return group_score[a] > group_score[b]; });
    const double group_gap = sh.topk_groups < sh.groups ? group_score[groups[sh.topk_groups - 1]] -
                                                              group_score[groups[sh.topk_groups]]
                                                        : INFINITY;
    std::vector<bool> keep(sh.groups, false);
    for (int64_t i = 0; i < sh.topk_groups; ++i) keep[groups[i]] = true;
    for (int64_t e = 0; e < e_count; ++e) {
      if (!keep[e / group_size]) c[e] = -INFINITY;
    }
    std::vector<int32_t> order(e_count);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return c[a] > c[b]; });
    // The gap between picks i and i + 1 (NaN, never decisive, between two masked experts).
    auto gap = [&](int64_t i) {
      return i + 1 < e_count ? c[order[i]] - c[order[i + 1]] : INFINITY;
    };
    r.set_decisive = group_gap > kTieGap && gap(sh.top_k - 1) > kTieGap;
    double sum = 0;
    for (int64_t i = 0; i < sh.top_k; ++i) {
      r.ids.push_back(order[i]);
      r.id_decisive.push_back(group_gap > kTieGap && (i == 0 || gap(i - 1) > kTieGap) &&
                              gap(i) > kTieGap);
      sum += r.s[order[i]];
    }
    r.denom = sh.norm_topk_prob ? sum : 1.0;
  }
  return out;
}

// The sections an op reports: the path it took.
class PathLog final : public OpSections {
 public:
  void BeginSection(const char* name) override { names.emplace_back(name); }
  void EndSection() override {}
  std::vector<std::string> names;
};

// One route's outputs and the path that made them.
struct Routed {
  std::vector<int32_t> ids;    // [T, top_k]
  std::vector<float> weights;  // [T, top_k]
  std::string path;
};

// Checks `got` against the reference; `checked` counts the decisive ids compared.
void ExpectMatches(const RouteShape& sh, const std::vector<RefToken>& want, const Routed& got,
                   int64_t& checked) {
  for (size_t t = 0; t < want.size(); ++t) {
    const RefToken& r = want[t];
    for (int64_t i = 0; i < sh.top_k; ++i) {
      SCOPED_TRACE(absl::StrCat("token ", t, " pick ", i));
      const int32_t id = got.ids[t * sh.top_k + i];
      const float w = got.weights[t * sh.top_k + i];
      ASSERT_TRUE(id >= 0 && id < sh.experts) << id;
      for (int64_t j = 0; j < i; ++j) EXPECT_NE(got.ids[t * sh.top_k + j], id) << "picked twice";
      EXPECT_TRUE(std::isfinite(w)) << w;
      if (r.id_decisive[i]) {
        EXPECT_EQ(id, r.ids[i]);
        ++checked;
      }
      if (r.set_decisive) {
        const double want_w = r.s[id] / r.denom * sh.scaling;
        EXPECT_NEAR(w, want_w, kWeightTol * std::abs(want_w));
      }
    }
  }
}

class CudaMoeRouteTest : public testing::GpuTest {
 protected:
  RouteInputs MakeInputs(const RouteShape& sh, int64_t tokens) {
    RouteInputs in;
    in.tokens = tokens;
    in.x = RandomBf16(tokens * sh.hidden, rng_);
    // Logits of unit spread (x's variance 1/3, the router's a^2 / 3 for a = 3 / sqrt(H)): the
    // sigmoid scores spread over (0, 1), so most picks are decisive.
    const float a = 3.0f / std::sqrt(static_cast<float>(sh.hidden));
    in.router = RandomBf16(sh.experts * sh.hidden, rng_, a);
    std::uniform_real_distribution<float> u(-0.1f, 0.1f);
    for (int64_t e = 0; e < sh.experts; ++e) in.bias.push_back(u(rng_));
    Upload(sh, in);
    return in;
  }

  // The device copies of in's host values.
  void Upload(const RouteShape& sh, RouteInputs& in) {
    in.dx = Dev(in.x, in.tokens, sh.hidden);
    in.drouter = Dev(in.router, sh.experts, sh.hidden);
    in.dbias = Tensor(gpu_->allocator(), DType::kF32, {sh.experts});
    CopyIn(*gpu_, in.dbias, in.bias.data());
  }

  // MoeRoute into poisoned outputs, read back.
  Routed Route(const RouteShape& sh, const RouteInputs& in) {
    Tensor ids = DevEmpty(DType::kI32, in.tokens, sh.top_k);      // [T, top_k]
    Tensor weights = DevEmpty(DType::kF32, in.tokens, sh.top_k);  // [T, top_k]
    PathLog log;
    gpu_->SetOpSections(&log);
    gpu_->MoeRoute(in.dx, in.drouter, in.dbias, sh.params(), ids, weights);
    gpu_->SetOpSections(nullptr);
    Routed r{std::vector<int32_t>(in.tokens * sh.top_k), std::vector<float>(in.tokens * sh.top_k),
             log.names.empty() ? "" : log.names[0]};
    CopyOut(*gpu_, ids, r.ids.data());
    CopyOut(*gpu_, weights, r.weights.data());
    return r;
  }

  std::mt19937 rng_{20261204};
};

TEST_F(CudaMoeRouteTest, DecodeStepsTakeTheFusedRouterAndMatchTheReference) {
  int64_t checked = 0, picks = 0;
  for (const RouteShape& sh : {kV3, kSmall}) {
    for (int64_t tokens : {1, 2, 5, 8}) {
      SCOPED_TRACE(absl::StrCat(sh.name, ", ", tokens, " tokens"));
      const RouteInputs in = MakeInputs(sh, tokens);
      const std::vector<RefToken> want = Reference(sh, in);
      const Routed first = Route(sh, in);
      EXPECT_EQ(first.path, kFusedPath);
      ExpectMatches(sh, want, first, checked);
      // The ticket is 0 again: the second launch's last block selects, from the same sums.
      const Routed second = Route(sh, in);
      EXPECT_EQ(second.ids, first.ids);
      EXPECT_EQ(second.weights, first.weights);
      picks += tokens * sh.top_k;
    }
  }
  EXPECT_GT(checked, picks / 2) << "too few decisive picks to check";
}

// 9 tokens: cuBLASLt and the ranking MoeTopk; 300: the warp per token that shares the fused
// kernel's selection (SelectExperts).
TEST_F(CudaMoeRouteTest, LargerStepsTakeTheGemmPathAndMatchTheReference) {
  int64_t checked = 0, picks = 0;
  for (const RouteShape& sh : {kV3, kSmall}) {
    for (int64_t tokens : {9, 300}) {
      SCOPED_TRACE(absl::StrCat(sh.name, ", ", tokens, " tokens"));
      const RouteInputs in = MakeInputs(sh, tokens);
      const Routed got = Route(sh, in);
      EXPECT_EQ(got.path, kGemmPath);
      ExpectMatches(sh, Reference(sh, in), got, checked);
      picks += tokens * sh.top_k;
    }
  }
  EXPECT_GT(checked, picks / 2) << "too few decisive picks to check";
}

// One token selects with the whole last block where its groups hold 32 experts each (V3's),
// two tokens with a warp each: a token alone and beside a copy of itself must route to the same
// bits. Repeated router rows (and biases) tie choice scores exactly: "pairs" within each group,
// "groups" also group g + 4 as a copy of group g (tied group scores), "all" every expert alike
// (the lowest groups kept, the lowest experts picked).
TEST_F(CudaMoeRouteTest, OneTokenBlockwideSelectionMatchesTheWarpSelection) {
  const RouteShape& sh = kV3;
  const int64_t h = sh.hidden, group_size = sh.experts / sh.groups;
  for (const char* ties : {"none", "pairs", "groups", "all"}) {
    SCOPED_TRACE(ties);
    const std::string kind = ties;
    RouteInputs two = MakeInputs(sh, 2);
    std::copy_n(two.x.begin(), h, two.x.begin() + h);
    for (int64_t e = 0; e < sh.experts; ++e) {
      int64_t from = e;
      if (kind == "all") from = 0;
      if (kind == "pairs" || kind == "groups") from = e - e % 2;
      if (kind == "groups" && e / group_size >= sh.groups / 2) {
        from -= sh.groups / 2 * group_size;
      }
      std::copy_n(two.router.begin() + from * h, h, two.router.begin() + e * h);
      two.bias[e] = two.bias[from];
    }
    Upload(sh, two);
    RouteInputs one;
    one.tokens = 1;
    one.x.assign(two.x.begin(), two.x.begin() + h);
    one.router = two.router;
    one.bias = two.bias;
    Upload(sh, one);
    const Routed alone = Route(sh, one), beside = Route(sh, two);
    EXPECT_EQ(alone.path, kFusedPath);
    EXPECT_EQ(beside.path, kFusedPath);
    const auto first = [&](const auto& v) { return std::vector(v.begin(), v.begin() + sh.top_k); };
    EXPECT_EQ(alone.ids, first(beside.ids));
    EXPECT_EQ(alone.weights, first(beside.weights));
    EXPECT_EQ(first(beside.ids), std::vector(beside.ids.begin() + sh.top_k, beside.ids.end()));
    if (kind == "all") {
      std::vector<int32_t> lowest(sh.top_k);
      std::iota(lowest.begin(), lowest.end(), 0);
      EXPECT_EQ(alone.ids, lowest);
    }
    if (kind == "none") {
      int64_t checked = 0;
      ExpectMatches(sh, Reference(sh, one), alone, checked);
      EXPECT_GT(checked, sh.top_k / 2);
    }
  }
}

// Two fused routes (two layers' routers) back to back in one graph, launched with PDL as decode
// steps are: each replay must find the ticket at 0, with no reset in the graph.
TEST_F(CudaMoeRouteTest, FusedRouterTicketResetsItselfUnderGraphReplay) {
  const RouteShape& sh = kV3;
  const RouteInputs a = MakeInputs(sh, 8), b = MakeInputs(sh, 3);
  const Routed eager_a = Route(sh, a), eager_b = Route(sh, b);
  int64_t checked = 0;
  ExpectMatches(sh, Reference(sh, a), eager_a, checked);
  ExpectMatches(sh, Reference(sh, b), eager_b, checked);
  Tensor ids_a = DevEmpty(DType::kI32, a.tokens, sh.top_k);
  Tensor weights_a = DevEmpty(DType::kF32, a.tokens, sh.top_k);
  Tensor ids_b = DevEmpty(DType::kI32, b.tokens, sh.top_k);
  Tensor weights_b = DevEmpty(DType::kF32, b.tokens, sh.top_k);
  const cudaStream_t stream = gpu_->stream();
  cudaGraph_t graph;
  kernels::SetProgrammaticLaunch(true);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  gpu_->MoeRoute(a.dx, a.drouter, a.dbias, sh.params(), ids_a, weights_a);
  gpu_->MoeRoute(b.dx, b.drouter, b.dbias, sh.params(), ids_b, weights_b);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  kernels::SetProgrammaticLaunch(false);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 3; ++replay) {
    SCOPED_TRACE(absl::StrCat("replay ", replay));
    for (const Tensor* t : {&ids_a, &weights_a, &ids_b, &weights_b}) Poison(*gpu_, *t);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    for (auto [ids, weights, eager] :
         {std::tuple{&ids_a, &weights_a, &eager_a}, std::tuple{&ids_b, &weights_b, &eager_b}}) {
      Routed got{std::vector<int32_t>(eager->ids.size()), std::vector<float>(eager->weights.size()),
                 ""};
      CopyOut(*gpu_, *ids, got.ids.data());
      CopyOut(*gpu_, *weights, got.weights.data());
      EXPECT_EQ(got.ids, eager->ids);
      EXPECT_EQ(got.weights, eager->weights);
    }
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
}

}  // namespace
}  // namespace dsv3
