// Helpers for GPU tests: skipping without a device, random host data, device transfers with
// poisoned outputs, and the error measure every comparison uses.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/dtype.h"
#include "engine/backend/timing_hooks.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "tests/test_util.h"

namespace dsv3::testing {

// Logits of a run split over GPUs (--tp 2, --dp-attention) against one GPU's: the largest
// difference allowed, and the top-2 margin of one GPU's logits above which the greedy tokens
// must agree (below it a near-tie may flip either way). Also the margin the graphed and eager
// steps are held to.
inline constexpr double kMultiGpuLogitTol = 3e-2;
inline constexpr float kGreedyMargin = 0.1f;

// Device memory owned by a test (raw kernels' operands), copied from the host when given.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&p_, bytes), cudaSuccess); }
  DeviceBuffer(const void* host, size_t bytes) : DeviceBuffer(bytes) {
    EXPECT_EQ(cudaMemcpy(p_, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* get() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

// In a test body: skips with a message when no GPU is present.
#define DSV3_SKIP_WITHOUT_GPU()                                                   \
  do {                                                                            \
    if (::dsv3::CudaBackend::DeviceCount() == 0) {                                \
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount found none): GPU test skipped"; \
    }                                                                             \
  } while (0)

// ||got - want|| / ||want||; NaN (an unwritten, poisoned element) gives +inf.
inline double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// The index of the largest value of row [vocab] (the first on ties) and its margin over the
// second largest: greedy tokens are compared only where that margin is decisive.
inline std::pair<int32_t, float> TopToken(const float* row, int64_t vocab) {
  int32_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (row[i] > row[best]) best = static_cast<int32_t>(i);
  }
  float second = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    if (i != best) second = std::max(second, row[i]);
  }
  return {best, row[best] - second};
}

// A small random-weight model at DeepSeek-V3's latent dims (kv_lora_rank 512, rope 64), where
// decode attention takes the flash decode kernel: 2 layers (1 dense), 16 heads, FP8.
inline absl::StatusOr<ModelConfig> V3LatentDimsConfig() {
  return ModelConfig::FromJson(R"({"model_type": "deepseek_v3", "vocab_size": 512,
    "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 128,
    "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 16,
    "num_key_value_heads": 16, "q_lora_rank": 128, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1, "routed_scaling_factor": 2.5,
    "norm_topk_prob": true, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
    "rms_norm_eps": 1e-6, "rope_theta": 10000, "max_position_embeddings": 4096,
    "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
      "weight_block_size": [128, 128]}})",
                               "V3 latent dims test config");
}

// A test with a CudaBackend on GPU 0 (skipped without a GPU) and host/device helpers.
// Counts the sections a backend opens whose names start with `prefix` (CudaBackend::SetOpSections:
// the kernel paths its ops took).
class SectionCount final : public OpSections {
 public:
  explicit SectionCount(std::string prefix) : prefix_(std::move(prefix)) {}
  void BeginSection(const char* name) override {
    count += std::string_view(name).substr(0, prefix_.size()) == prefix_ ? 1 : 0;
  }
  void EndSection() override {}
  int count = 0;

 private:
  std::string prefix_;
};

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DSV3_SKIP_WITHOUT_GPU();
    auto gpu = CudaBackend::Create({});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = *std::move(gpu);
  }
  void TearDown() override {
    if (gpu_) gpu_->Synchronize();
  }

  // Host [rows, cols] F32 and its device BF16 copy.
  Tensor Dev(const std::vector<float>& v, int64_t rows, int64_t cols) {
    return gpu_->Upload(
        TensorView::Contiguous(const_cast<float*>(v.data()), DType::kF32, {rows, cols}));
  }
  // A device tensor poisoned with NaN, so that unwritten elements show.
  Tensor DevEmpty(DType dtype, int64_t rows, int64_t cols);
  static TensorView Host(std::vector<float>& v, int64_t rows, int64_t cols) {
    return TensorView::Contiguous(v.data(), DType::kF32, {rows, cols});
  }

  std::unique_ptr<CudaBackend> gpu_;
};

// Uniform values in [-scale, scale], rounded to BF16 so that both backends see the same inputs.
inline std::vector<float> RandomBf16(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = Bf16ToF32(F32ToBf16(u(rng)));
  return v;
}

// Fills a device tensor with 0xff bytes: NaN for BF16 and F32, so unwritten elements show.
// (The backend's stream does not order against the legacy stream: synchronize around.)
inline void Poison(CudaBackend& gpu, const TensorView& t) {
  gpu.Synchronize();
  ASSERT_EQ(cudaMemset(t.data, 0xff, t.nbytes()), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// Raw copies between host and a backend tensor, ordered after the backend's queued work.
inline void CopyIn(CudaBackend& gpu, const TensorView& t, const void* host) {
  gpu.Synchronize();
  ASSERT_EQ(cudaMemcpy(t.data, host, t.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
}
inline void CopyOut(CudaBackend& gpu, const TensorView& t, void* host) {
  gpu.Synchronize();
  ASSERT_EQ(cudaMemcpy(host, t.data, t.nbytes(), cudaMemcpyDeviceToHost), cudaSuccess);
}

inline std::vector<float> ToHost(CudaBackend& gpu, const TensorView& t) {
  std::vector<float> v(t.numel());
  gpu.Download(t, v.data());
  return v;
}

// Random FP8 weight [n, k] (bytes of finite e4m3 values) and its block scales.
struct Fp8Weight {
  std::vector<uint8_t> q;
  std::vector<float> scale;
  int64_t n, k;
  TensorView weight() { return TensorView::Contiguous(q.data(), DType::kF8E4M3, {n, k}); }
  TensorView scale_inv() {
    return TensorView::Contiguous(scale.data(), DType::kF32, {(n + 127) / 128, (k + 127) / 128});
  }
};
inline Fp8Weight RandomFp8(int64_t n, int64_t k, std::mt19937& rng) {
  Fp8Weight w{std::vector<uint8_t>(n * k), std::vector<float>(((n + 127) / 128) * ((k + 127) / 128)),
              n, k};
  std::normal_distribution<float> normal(0.0f, 100.0f);
  for (uint8_t& b : w.q) b = F32ToFp8E4M3(std::fmax(std::fmin(normal(rng), 448.0f), -448.0f));
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (float& s : w.scale) s = u(rng) / (100.0f * std::sqrt(static_cast<float>(k)));
  return w;
}

inline Tensor GpuTest::DevEmpty(DType dtype, int64_t rows, int64_t cols) {
  Tensor t(gpu_->allocator(), dtype, {rows, cols});
  Poison(*gpu_, t);
  return t;
}

// Submits `requests` greedy requests at once (prompt r: `prompt_len` tokens (131 r + 7 i) %
// vocab, `max_tokens` new tokens each, EOS ignored) and reads every stream to its end; a request
// that fails is a test failure (callers check HasFatalFailure()).
inline void RunGreedyRequests(Engine& engine, int requests, int prompt_len, int max_tokens,
                              int64_t vocab) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int r = 0; r < requests; ++r) {
    EngineRequest request;
    request.request_id = absl::StrCat("r", r);
    for (int i = 0; i < prompt_len; ++i) {
      request.prompt_ids.push_back(static_cast<int32_t>((r * 131 + i * 7) % vocab));
    }
    request.sampling.temperature = 0;
    request.sampling.max_tokens = max_tokens;
    request.sampling.ignore_eos = true;
    auto stream = engine.Submit(std::move(request));
    ASSERT_TRUE(stream.ok()) << stream.status();
    streams.push_back(*std::move(stream));
  }
  for (auto& stream : streams) {
    while (auto delta = stream->Next()) {
      ASSERT_NE(delta->finish_reason, FinishReason::kError) << delta->error;
    }
  }
}

// Token i of prompt s in the GPU tests' prefills.
inline int32_t PromptToken(int s, int64_t i, int64_t vocab) {
  return static_cast<int32_t>((17 + 31 * s + 7 * i) % vocab);
}

// One prefill step of prompts of `lengths` (sequence s: PromptToken(s, i), in blocks table(s)),
// with the logits of each prompt's last token.
inline ForwardBatch PromptsPrefill(const std::vector<int32_t>& lengths,
                                   const std::function<std::vector<int32_t>(int)>& table,
                                   int64_t vocab) {
  ForwardBatch prefill;
  for (int s = 0; s < static_cast<int>(lengths.size()); ++s) {
    const int32_t begin = static_cast<int32_t>(prefill.token_ids.size());
    for (int32_t i = 0; i < lengths[s]; ++i) prefill.token_ids.push_back(PromptToken(s, i, vocab));
    prefill.sequences.push_back({begin, lengths[s], 0, table(s)});
    prefill.logits_rows.push_back(begin + lengths[s] - 1);
  }
  return prefill;
}

// One fixture model (the test parameter, a FixturePath name) loaded twice: on gpu_, which runs
// decode layers as CUDA graphs, and on eager_, a backend without graphs (the reference).
class EagerGraphedModelsTest : public GpuTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto eager = CudaBackend::Create({.cuda_graphs = false});
    ASSERT_TRUE(eager.ok()) << eager.status();
    eager_ = *std::move(eager);
    for (auto [backend, model] : {std::pair{gpu_.get(), &graphed_model_},
                                  std::pair{eager_.get(), &eager_model_}}) {
      auto loaded = DeepseekV3Model::Load(FixturePath(GetParam()), *backend);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      *model = *std::move(loaded);
    }
  }
  void TearDown() override {
    // The models' tensors live in their backends' memory: freed first.
    graphed_model_.reset();
    eager_model_.reset();
    if (eager_) eager_->Synchronize();
    GpuTest::TearDown();
  }

  std::unique_ptr<CudaBackend> eager_;
  std::unique_ptr<DeepseekV3Model> graphed_model_, eager_model_;
};

}  // namespace dsv3::testing
