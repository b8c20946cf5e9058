// The fixture models on the GPU against transformers' references (tests/data/fixtures): logits
// within 3e-2 relative error, and the same greedy tokens wherever the reference's top-2 margin
// exceeds 0.1, through prefill, decode steps over the paged cache, and batches mixing both. An
// FP8 checkpoint is compared with transformers run with FP8 activations (BF16 model, every FP8
// linear quantizing its input 1x128 to e4m3: fp8act_logits_<i>.npy, made by
// tools/fixtures/make_fp8_reference.py), a BF16 checkpoint with transformers in float32
// (logits_<i>.npy). And against the CPU backend emulating the GPU's numerics
// (CpuBackendOptions: FP8 activations, BF16 between ops) within 1e-2: the check that separates
// a GPU bug from the fixtures' inherent quantization noise. Every prefill prints
// "errors <fixture> prompt <i>: gpu-ref .. gpu-f32 .. fp8ref-f32 .. emu-ref .. gpu-emu .." for
// docs/cuda.md (ref: the reference the test compares with; f32: transformers in float32).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/model/model.h"
#include "engine/util/npy.h"
#include "tests/fixture_reference.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RelError;
using ::dsv3::testing::TopToken;

constexpr double kLogitsTol = 3e-2;
constexpr double kEmulatedTol = 1e-2;
constexpr float kMargin = 0.1f;

std::vector<int32_t> Blocks(int32_t first, int32_t n) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// The models live in their backends' memory: as members of the derived class they go first.
class CudaModelTest : public ::dsv3::testing::GpuTest,
                      public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto model = DeepseekV3Model::Load(FixturePath(GetParam()), *gpu_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    auto cpu_model = DeepseekV3Model::Load(FixturePath(GetParam()), cpu_);
    ASSERT_TRUE(cpu_model.ok()) << cpu_model.status();
    cpu_model_ = *std::move(cpu_model);
    auto emu_model = DeepseekV3Model::Load(FixturePath(GetParam()), emu_);
    ASSERT_TRUE(emu_model.ok()) << emu_model.status();
    emu_model_ = *std::move(emu_model);
    fixture_ = GetParam().substr(0, GetParam().rfind('-'));
    ref_ = ::dsv3::testing::LoadFixtureReference(fixture_);
  }
  int64_t vocab() const { return model_->config().vocab_size; }
  bool fp8_checkpoint() const { return GetParam().ends_with("-fp8"); }

  // transformers' logits for prompt i: with FP8 activations for an FP8 checkpoint (`fp8`
  // true), in float32 otherwise.
  std::vector<float> TransformersLogits(size_t i, bool fp8) const {
    auto logits = ReadNpyF32(FixturePath(fixture_ + "-ref/" + (fp8 ? "fp8act_logits_" : "logits_") +
                                         std::to_string(i) + ".npy"));
    EXPECT_TRUE(logits.ok()) << logits.status();
    return logits.ok() ? std::move(logits->data) : std::vector<float>{};
  }
  std::vector<float> ReferenceLogits(size_t i) const {
    return TransformersLogits(i, fp8_checkpoint());
  }

  // Logits of every position of `tokens` from one prefill on `model`.
  std::vector<float> Prefill(DeepseekV3Model& model, Backend& backend,
                             const std::vector<int32_t>& tokens) {
    const int32_t n = static_cast<int32_t>(tokens.size());
    KvCache cache(backend, model.config(), (n + 15) / 16, 16);
    ForwardBatch batch;
    batch.token_ids = tokens;
    batch.sequences.push_back({0, n, 0, Blocks(0, (n + 15) / 16)});
    batch.logits_rows.resize(n);
    std::iota(batch.logits_rows.begin(), batch.logits_rows.end(), 0);
    std::vector<float> logits;
    EXPECT_TRUE(model.Forward(batch, cache, logits).ok());
    return logits;
  }

  CpuBackend cpu_{4};
  CpuBackend emu_{CpuBackendOptions{.num_threads = 4, .fp8_activations = true,
                                    .bf16_activations = true}};
  std::unique_ptr<DeepseekV3Model> model_, cpu_model_, emu_model_;
  std::string fixture_;
  ::dsv3::testing::FixtureReference ref_;
};

// The GPU against the CPU model that rounds like the GPU: a real bug breaks this, the
// fixtures' FP8/BF16 noise does not. Prints the errors per prompt.
TEST_P(CudaModelTest, PrefillLogitsMatchEmulatedCpu) {
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    const auto want = ReferenceLogits(i), f32 = TransformersLogits(i, false);
    ASSERT_FALSE(want.empty());
    const auto got = Prefill(*model_, *gpu_, ref_.prompts[i]);
    const auto emu = Prefill(*emu_model_, emu_, ref_.prompts[i]);
    const double gpu_emu = RelError(got, emu);
    std::printf("errors %s prompt %zu: gpu-ref %.4f gpu-f32 %.4f fp8ref-f32 %.4f emu-ref %.4f "
                "gpu-emu %.4f\n",
                GetParam().c_str(), i, RelError(got, want), RelError(got, f32),
                fp8_checkpoint() ? RelError(want, f32) : 0.0, RelError(emu, want), gpu_emu);
    EXPECT_LT(gpu_emu, kEmulatedTol) << "prompt " << i;
  }
}

TEST_P(CudaModelTest, PrefillLogitsMatchTransformers) {
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    const auto want = ReferenceLogits(i);
    ASSERT_FALSE(want.empty());
    const auto got = Prefill(*model_, *gpu_, ref_.prompts[i]);
    EXPECT_LT(RelError(got, want), kLogitsTol) << "prompt " << i;
  }
}

TEST_P(CudaModelTest, PrefillGreedyMatchesTransformersWhereDecisive) {
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    const auto want = ReferenceLogits(i);
    ASSERT_FALSE(want.empty());
    const auto got = Prefill(*model_, *gpu_, ref_.prompts[i]);
    for (int64_t r = 0; r < static_cast<int64_t>(ref_.prompts[i].size()); ++r) {
      const auto [ref_token, margin] = TopToken(want.data() + r * vocab(), vocab());
      if (margin > kMargin) {
        EXPECT_EQ(TopToken(got.data() + r * vocab(), vocab()).first, ref_token) << "prompt " << i << " row " << r;
      }
    }
  }
}

// Prefill the prompt, then feed the reference continuation one token per step (decode through
// the paged cache, absorbed MLA): each step's greedy token must be the reference's wherever
// the reference is decisive (the CPU backend, equal to transformers to 1e-4, gives the margin).
TEST_P(CudaModelTest, TeacherForcedDecodeMatchesReferenceTokens) {
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    std::vector<int32_t> all = ref_.prompts[i];
    all.insert(all.end(), ref_.continuations[i].begin(), ref_.continuations[i].end());
    const auto cpu_logits = Prefill(*cpu_model_, cpu_, all);
    const auto emu_logits = Prefill(*emu_model_, emu_, all);
    const int32_t n = static_cast<int32_t>(ref_.prompts[i].size());
    const int32_t total = static_cast<int32_t>(all.size());
    KvCache cache(*gpu_, model_->config(), (total + 15) / 16 + 2, 16);
    std::vector<int32_t> table = Blocks(0, (total + 15) / 16 + 2);
    std::reverse(table.begin(), table.end());  // physical blocks out of order
    ForwardBatch batch;
    batch.token_ids.assign(all.begin(), all.begin() + n);
    batch.sequences.push_back({0, n, 0, table});
    batch.logits_rows = {n - 1};
    std::vector<float> logits;
    for (int32_t pos = n;; ++pos) {
      ASSERT_TRUE(model_->Forward(batch, cache, logits).ok());
      const auto [want, margin] = TopToken(cpu_logits.data() + (pos - 1) * vocab(), vocab());
      if (margin > kMargin) {
        EXPECT_EQ(TopToken(logits.data(), vocab()).first, want) << "prompt " << i << " position " << pos;
      }
      EXPECT_LT(RelError(logits, std::vector<float>(cpu_logits.begin() + (pos - 1) * vocab(),
                                                    cpu_logits.begin() + pos * vocab())),
                kLogitsTol)
          << "prompt " << i << " position " << pos;
      // Decode (absorbed MLA) against the emulated prefill (naive MLA): same function.
      EXPECT_LT(RelError(logits, std::vector<float>(emu_logits.begin() + (pos - 1) * vocab(),
                                                    emu_logits.begin() + pos * vocab())),
                kEmulatedTol)
          << "emulated: prompt " << i << " position " << pos;
      if (pos == total) break;
      batch.token_ids = {all[pos]};
      batch.sequences = {{0, 1, pos, table}};
      batch.logits_rows = {0};
    }
  }
}

// Every prompt in one batch, some as a cached prefix plus a chunk and some as one decode token
// after a prefill: each sequence's logits match its CPU logits.
TEST_P(CudaModelTest, MixedBatchMatchesCpu) {
  const int64_t v = vocab();
  KvCache cache(*gpu_, model_->config(), 96, 16);
  ForwardBatch warm, step;
  int32_t next_block = 0;
  std::vector<std::vector<int32_t>> tables;
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    const auto& prompt = ref_.prompts[i];
    const int32_t n = static_cast<int32_t>(prompt.size());
    const int32_t blocks = (n + 15) / 16;
    tables.push_back(Blocks(next_block, blocks));
    next_block += blocks;
    // First step: all but the last `tail` tokens; second step: the tail (1 token: decode).
    const int32_t tail = i % 2 == 0 ? 1 : std::min(n - 1, 5);
    if (n > tail) {
      warm.sequences.push_back({warm.num_tokens(), n - tail, 0, tables.back()});
      warm.token_ids.insert(warm.token_ids.end(), prompt.begin(), prompt.end() - tail);
    }
    step.sequences.push_back({step.num_tokens(), tail, n - tail, tables.back()});
    step.token_ids.insert(step.token_ids.end(), prompt.end() - tail, prompt.end());
    for (int32_t r = 0; r < tail; ++r) step.logits_rows.push_back(step.sequences.back().token_begin + r);
  }
  ASSERT_LE(next_block, 96);
  warm.logits_rows = {0};
  std::vector<float> logits;
  ASSERT_TRUE(model_->Forward(warm, cache, logits).ok());
  ASSERT_TRUE(model_->Forward(step, cache, logits).ok());
  int64_t row = 0;
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    const auto want = Prefill(*cpu_model_, cpu_, ref_.prompts[i]);
    const int32_t tail = step.sequences[i].num_tokens, n = static_cast<int32_t>(ref_.prompts[i].size());
    std::vector<float> got(logits.begin() + row * v, logits.begin() + (row + tail) * v);
    std::vector<float> ref(want.begin() + (n - tail) * v, want.end());
    EXPECT_LT(RelError(got, ref), kLogitsTol) << "prompt " << i;
    const auto emu = Prefill(*emu_model_, emu_, ref_.prompts[i]);
    EXPECT_LT(RelError(got, std::vector<float>(emu.begin() + (n - tail) * v, emu.end())),
              kEmulatedTol)
        << "emulated: prompt " << i;
    row += tail;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaModelTest,
                         ::testing::ValuesIn(::dsv3::testing::AllFixtureCheckpoints()),
                         ::dsv3::testing::FixtureTestName);

}  // namespace
}  // namespace dsv3
