// Lockstep: the fixture models' forward on the GPU, with every op also run on the CPU emulating
// the GPU's numerics (GpuEmulationBackend) from the GPU's own inputs, downloaded just before the
// op. Each op's output is compared at once, so the model's error amplification never enters: a
// GPU bug anywhere shows as the op where it happens. Ops that only move data (GatherRows,
// ScatterSumRows, PadRows, SumRowBlocks, WriteKvCache) are forwarded unchecked (the op tests
// compare them exactly).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "engine/backend/cpu/gpu_emulation_backend.h"
#include "engine/model/model.h"
#include "tests/fixture_reference.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::RelError;

constexpr double kOpTol = 1e-2;

// Host F32 copy of a device view (BF16, F32 or I32 as float; 2-D or 3-D, any row strides).
std::vector<float> HostCopy(CudaBackend& gpu, const TensorView& t) {
  gpu.Synchronize();
  const int64_t size = DTypeSize(t.dtype);
  const int64_t outer = t.dim(0), mid = t.ndim == 3 ? t.dim(1) : 1, inner = t.dim(-1);
  const int64_t s_outer = t.strides[0], s_mid = t.ndim == 3 ? t.strides[1] : 0;
  std::vector<uint8_t> raw(outer * mid * inner * size);
  for (int64_t o = 0; o < outer; ++o) {
    EXPECT_EQ(cudaMemcpy2D(raw.data() + o * mid * inner * size, inner * size,
                           static_cast<const uint8_t*>(t.data) + o * s_outer * size,
                           (t.ndim == 3 ? s_mid : inner) * size, inner * size, mid,
                           cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  std::vector<float> out(outer * mid * inner);
  for (size_t i = 0; i < out.size(); ++i) {
    if (t.dtype == DType::kBF16) {
      out[i] = Bf16ToF32(reinterpret_cast<const uint16_t*>(raw.data())[i]);
    } else if (t.dtype == DType::kI32) {
      out[i] = static_cast<float>(reinterpret_cast<const int32_t*>(raw.data())[i]);
    } else {
      out[i] = reinterpret_cast<const float*>(raw.data())[i];
    }
  }
  return out;
}

TensorView View(std::vector<float>& v, std::initializer_list<int64_t> shape) {
  return TensorView::Contiguous(v.data(), DType::kF32, shape);
}

class LockstepBackend final : public Backend {
 public:
  explicit LockstepBackend(CudaBackend& gpu)
      : gpu_(gpu), cpu_(8, GpuEmulation{.fp8_activations = true, .bf16_activations = true}) {}

  Device device() const override { return gpu_.device(); }
  Allocator* allocator() override { return gpu_.allocator(); }
  std::string name() const override { return "lockstep"; }
  DType activation_dtype() const override { return gpu_.activation_dtype(); }
  DType kv_cache_dtype() const override { return gpu_.kv_cache_dtype(); }

  absl::StatusOr<LinearWeight> LoadLinear(const TensorSource& ckpt, const std::string& prefix,
                                          int64_t n, int64_t k, const Slice2D& slice,
                                          std::vector<Tensor>& storage) override {
    auto c = cpu_.LoadLinear(ckpt, prefix, n, k, slice, cpu_storage_);
    auto g = gpu_.LoadLinear(ckpt, prefix, n, k, slice, storage);
    if (!c.ok() || !g.ok()) return c.ok() ? g.status() : c.status();
    linear_[g->weight.data] = *c;
    return g;
  }
  absl::StatusOr<TensorView> LoadDense(const TensorSource& ckpt, const std::string& name,
                                       std::span<const int64_t> shape,
                                       std::vector<Tensor>& storage) override {
    auto c = cpu_.LoadDense(ckpt, name, shape, cpu_storage_);
    auto g = gpu_.LoadDense(ckpt, name, shape, storage);
    if (!c.ok() || !g.ok()) return c.ok() ? g.status() : c.status();
    dense_[g->data] = *c;
    return g;
  }
  absl::StatusOr<LinearWeight> MakeLinear(const TensorView& weight, const TensorView& scale_inv,
                                          std::vector<Tensor>& storage) override {
    auto c = cpu_.MakeLinear(weight, scale_inv, cpu_storage_);
    auto g = gpu_.MakeLinear(weight, scale_inv, storage);
    if (!c.ok() || !g.ok()) return c.ok() ? g.status() : c.status();
    linear_[g->weight.data] = *c;
    return g;
  }
  // The GPU's experts as the GPU backend lays them out (their CPU twins, found by address, stay
  // as loaded): the MoE ops run on k-block-major experts as in the server.
  absl::Status PrepareRoutedExperts(std::span<ExpertWeights> experts) override {
    return gpu_.PrepareRoutedExperts(experts);
  }
  Tensor Upload(const TensorView& host) override { return gpu_.Upload(host); }
  void Download(const TensorView& t, float* host) override { gpu_.Download(t, host); }
  void CopyToHost(const TensorView& src, void* host) override { gpu_.CopyToHost(src, host); }
  void CopyFromHost(const void* host, const TensorView& dst) override {
    gpu_.CopyFromHost(host, dst);
  }
  void BeginStep(const AttentionBatch& batch) override { gpu_.BeginStep(batch); }
  void BeginLayer(int64_t layer) override {
    layer_ = layer;
    gpu_.BeginLayer(layer);
  }
  void Synchronize() override { gpu_.Synchronize(); }

  void Embedding(const TensorView& table, std::span<const int32_t> ids, int64_t first_row,
                 const TensorView& out) override {
    std::vector<float> want(out.numel());
    cpu_.Embedding(Twin(linear_, table.data, "embedding").weight, ids, first_row, View(want, {out.dim(0), out.dim(1)}));
    gpu_.Embedding(table, ids, first_row, out);
    Check("embedding", out, want);
  }
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps,
               const TensorView& out) override {
    auto xh = HostCopy(gpu_, x);
    std::vector<float> want(out.dim(0) * out.dim(1));
    cpu_.RmsNorm(View(xh, {x.dim(0), x.dim(1)}), Twin(dense_, weight.data, "rmsnorm"), eps,
                 View(want, {out.dim(0), out.dim(1)}));
    gpu_.RmsNorm(x, weight, eps, out);
    Check("rmsnorm", out, want);
  }
  void Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) override {
    auto xh = HostCopy(gpu_, x);
    std::vector<float> want(y.dim(0) * y.dim(1));
    cpu_.Linear(View(xh, {x.dim(0), x.dim(1)}), Twin(linear_, w.weight.data, "linear"),
                View(want, {y.dim(0), y.dim(1)}));
    gpu_.Linear(x, w, y);
    Check(w.weight.dtype == DType::kF8E4M3 ? "linear fp8" : "linear bf16", y, want);
  }
  void LinearAdd(const TensorView& x, const LinearWeight& w, const TensorView& y) override {
    auto xh = HostCopy(gpu_, x);
    std::vector<float> want = HostCopy(gpu_, y);
    cpu_.LinearAdd(View(xh, {x.dim(0), x.dim(1)}), Twin(linear_, w.weight.data, "linear"),
                   View(want, {y.dim(0), y.dim(1)}));
    gpu_.LinearAdd(x, w, y);
    Check(w.weight.dtype == DType::kF8E4M3 ? "linear add fp8" : "linear add bf16", y, want);
  }
  void Add(const TensorView& a, const TensorView& b, const TensorView& out) override {
    auto ah = HostCopy(gpu_, a), bh = HostCopy(gpu_, b);
    std::vector<float> want(out.dim(0) * out.dim(1));
    cpu_.Add(View(ah, {a.dim(0), a.dim(1)}), View(bh, {b.dim(0), b.dim(1)}),
             View(want, {out.dim(0), out.dim(1)}));
    gpu_.Add(a, b, out);
    Check("add", out, want);
  }
  void Rope(const TensorView& x, std::span<const int32_t> positions,
            const RopeParams& rope) override {
    auto want = HostCopy(gpu_, x);
    cpu_.Rope(View(want, {x.dim(0), x.dim(1), x.dim(2)}), positions, rope);
    gpu_.Rope(x, positions, rope);
    Check("rope", x, want);
  }
  void SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) override {
    auto gh = HostCopy(gpu_, gate), uh = HostCopy(gpu_, up);
    std::vector<float> want(out.dim(0) * out.dim(1));
    cpu_.SiluMul(View(gh, {gate.dim(0), gate.dim(1)}), View(uh, {up.dim(0), up.dim(1)}),
                 View(want, {out.dim(0), out.dim(1)}));
    gpu_.SiluMul(gate, up, out);
    Check("silu_mul", out, want);
  }
  void Copy(const TensorView& src, const TensorView& dst) override { gpu_.Copy(src, dst); }
  void GatherRows(const TensorView& x, std::span<const int32_t> rows,
                  const TensorView& out) override {
    gpu_.GatherRows(x, rows, out);
  }
  void ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                      const TensorView& out) override {
    gpu_.ScatterSumRows(x, index, out);
  }
  void PadRows(const TensorView& x, float fill, const TensorView& out) override {
    gpu_.PadRows(x, fill, out);
  }
  void SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) override {
    gpu_.SumRowBlocks(x, blocks, out);
  }
  void WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                    const TensorView& cache) override {
    gpu_.WriteKvCache(latent, batch, cache);
  }
  void MlaAttention(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                    const AttentionBatch& batch, const MlaParams& params,
                    const TensorView& out) override {
    auto qh = HostCopy(gpu_, q);
    const TensorView flat = cache.Reshape({cache.dim(0) * cache.dim(1), cache.dim(2)});
    auto ch = HostCopy(gpu_, flat);
    std::vector<float> want(out.dim(0) * out.dim(1));
    cpu_.MlaAttention(View(qh, {q.dim(0), q.dim(1), q.dim(2)}),
                      View(ch, {cache.dim(0), cache.dim(1), cache.dim(2)}),
                      Twin(linear_, kv_b.weight.data, "mla"), batch, params,
                      View(want, {out.dim(0), out.dim(1)}));
    gpu_.MlaAttention(q, cache, kv_b, batch, params, out);
    Check("mla", out, want);
  }
  void MoeRoute(const TensorView& x, const TensorView& router, const TensorView& bias,
                const MoeRouteParams& params, const TensorView& topk_ids,
                const TensorView& topk_weights) override {
    auto xh = HostCopy(gpu_, x);
    const int64_t t = x.dim(0), k = params.top_k;
    std::vector<int32_t> ids(t * k);
    std::vector<float> w(t * k);
    cpu_.MoeRoute(View(xh, {t, x.dim(1)}), Twin(dense_, router.data, "router"),
                  Twin(dense_, bias.data, "bias"), params,
                  TensorView::Contiguous(ids.data(), DType::kI32, {t, k}), View(w, {t, k}));
    gpu_.MoeRoute(x, router, bias, params, topk_ids, topk_weights);
    const auto got = HostCopy(gpu_, topk_ids);
    int64_t differ = 0;
    for (int64_t i = 0; i < t * k; ++i) differ += got[i] != static_cast<float>(ids[i]);
    route_flips_ += differ;
    if (differ == 0) Check("moe_route weights", topk_weights, w);
  }
  void MoeExperts(const TensorView& x, const TensorView& topk_ids, const TensorView& topk_weights,
                  std::span<const ExpertWeights> experts, int64_t expert_begin,
                  const TensorView& out) override {
    auto xh = HostCopy(gpu_, x), wh = HostCopy(gpu_, topk_weights), idf = HostCopy(gpu_, topk_ids);
    std::vector<int32_t> ids(idf.begin(), idf.end());
    std::vector<ExpertWeights> cpu_experts;
    for (const ExpertWeights& e : experts) {
      cpu_experts.push_back({Twin(linear_, e.gate.weight.data, "experts"),
                             Twin(linear_, e.up.weight.data, "experts"),
                             Twin(linear_, e.down.weight.data, "experts")});
    }
    const int64_t t = x.dim(0), k = topk_ids.dim(1);
    std::vector<float> want(out.dim(0) * out.dim(1));
    cpu_.MoeExperts(View(xh, {t, x.dim(1)}), TensorView::Contiguous(ids.data(), DType::kI32, {t, k}),
                    View(wh, {t, k}), cpu_experts, expert_begin, View(want, {out.dim(0), out.dim(1)}));
    gpu_.MoeExperts(x, topk_ids, topk_weights, experts, expert_begin, out);
    Check("moe_experts", out, want);
  }

  // The CPU twin of a GPU weight (every weight goes through LoadLinear/LoadDense above; the
  // embedding table is a linear weight, sliced by vocabulary like lm_head).
  template <typename T>
  static const T& Twin(const std::map<const void*, T>& map, const void* gpu, const char* op) {
    auto it = map.find(gpu);
    if (it == map.end()) {
      std::fprintf(stderr, "lockstep: %s got a weight no Load call made (%p)\n", op, gpu);
      std::abort();
    }
    return it->second;
  }

  // Worst error per op kind, and routing decisions that differed.
  const std::map<std::string, double>& worst() const { return worst_; }
  int64_t route_flips() const { return route_flips_; }

 private:
  void Check(const std::string& op, const TensorView& got, const std::vector<float>& want) {
    const double err = RelError(HostCopy(gpu_, got), want);
    worst_[op] = std::max(worst_[op], err);
    EXPECT_LT(err, kOpTol) << op << " in layer " << layer_;
  }

  CudaBackend& gpu_;
  GpuEmulationBackend cpu_;
  std::vector<Tensor> cpu_storage_;
  std::map<const void*, LinearWeight> linear_;
  std::map<const void*, TensorView> dense_;
  std::map<std::string, double> worst_;
  int64_t layer_ = -1;
  int64_t route_flips_ = 0;
};

class CudaLockstepTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaLockstepTest, EveryOpMatchesTheEmulatedCpuOnTheModelsOwnData) {
  DSV3_SKIP_WITHOUT_GPU();
  auto gpu = CudaBackend::Create({});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  LockstepBackend lockstep(**gpu);
  auto model = DeepseekV3Model::Load(::dsv3::testing::FixturePath(GetParam()), lockstep);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto ref = ::dsv3::testing::LoadFixtureReference(GetParam().substr(0, GetParam().rfind('-')));
  for (size_t i : {0, 3, 4}) {  // 1, 64 and 130 tokens
    const auto& tokens = ref.prompts[i];
    const int32_t n = static_cast<int32_t>(tokens.size());
    KvCache cache(lockstep, (*model)->config(), (n + 15) / 16, 16);
    ForwardBatch batch;
    batch.token_ids = tokens;
    std::vector<int32_t> table((n + 15) / 16);
    std::iota(table.begin(), table.end(), 0);
    batch.sequences.push_back({0, n, 0, table});
    batch.logits_rows = {n - 1};
    std::vector<float> logits;
    ASSERT_TRUE((*model)->Forward(batch, cache, logits).ok());
  }
  std::string summary;
  for (const auto& [op, err] : lockstep.worst()) summary += " " + op + "=" + std::to_string(err);
  std::printf("lockstep %s: routing flips %lld;%s\n", GetParam().c_str(),
              static_cast<long long>(lockstep.route_flips()), summary.c_str());
  model->reset();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaLockstepTest,
                         ::testing::ValuesIn(::dsv3::testing::AllFixtureCheckpoints()),
                         ::dsv3::testing::FixtureTestName);

}  // namespace
}  // namespace dsv3
