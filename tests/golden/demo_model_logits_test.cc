// The demo model on the CPU backend in float32 against transformers 5.17 in float32
// (tests/data/demo-ref/golden_f32.npy, made by tools/demo-model/device-quality.sh through
// make_references.py): the first 48 tokens of held-out window 0, every position's next-token
// distribution. The FP8 weights are dequantized at load (amax/448 block scales, not powers of
// two); transformers runs the same dequantized weights. Mean KL divergence <= 1e-6 (the CPU line
// of docs/quality.md) and the same top-1 token everywhere.
#include <gtest/gtest.h>

#include <numeric>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/eval/metrics.h"
#include "engine/model/model.h"
#include "engine/util/npy.h"
#include "tests/demo_model.h"
#include "tests/test_util.h"

namespace dsv3::demo_model_logits_test {
namespace {

using ::dsv3::testing::DemoModelDir;
using ::dsv3::testing::HeldOutWindows;
using ::dsv3::testing::TestDataPath;

constexpr size_t kTokens = 48;

// Mean KL(P_reference || P_cpu) and top-1 agreement over the prompt's scored rows.
KlSummary CompareWithReference(Backend& backend, const std::string& reference) {
  const std::vector<int32_t> tokens = HeldOutWindows(1, kTokens).at(0);
  EXPECT_EQ(tokens.size(), kTokens);
  auto model = DeepseekV3Model::Load(DemoModelDir(), backend);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  const int32_t n = static_cast<int32_t>(tokens.size());
  KvCache cache(backend, (*model)->config(), (n + 15) / 16, 16);
  ForwardBatch batch;
  batch.token_ids = tokens;
  std::vector<int32_t> table((n + 15) / 16);
  std::iota(table.begin(), table.end(), 0);
  batch.sequences.push_back({0, n, 0, table});
  batch.logits_rows.resize(n - 1);
  std::iota(batch.logits_rows.begin(), batch.logits_rows.end(), 0);
  std::vector<float> logits;
  EXPECT_TRUE((*model)->Forward(batch, cache, logits).ok());

  auto ref = ReadNpyF32(TestDataPath("demo-ref/" + reference));
  EXPECT_TRUE(ref.ok()) << ref.status();
  if (!ref.ok()) return {};
  const int64_t vocab = (*model)->config().vocab_size;
  EXPECT_EQ(ref->shape, (std::vector<int64_t>{n - 1, vocab}));
  Scorer scorer(/*with_base=*/true);
  for (int32_t r = 0; r + 1 < n; ++r) {
    scorer.Add(ScorePosition({&logits[r * vocab], static_cast<size_t>(vocab)}, tokens[r + 1],
                             {&ref->data[r * vocab], static_cast<size_t>(vocab)}));
  }
  auto summary = scorer.Summary();
  EXPECT_TRUE(summary.ok());
  std::printf("demo %s: kld_mean %.3g kld_max %.3g top1 %.4f ppl_ratio %.7f\n", reference.c_str(),
              summary->kl->kld_mean, summary->kl->kld_max, summary->kl->top1_agree,
              summary->kl->ppl_ratio);
  return *summary->kl;
}

TEST(DemoModelLogits, CpuFloat32MatchesTransformersFloat32) {
  CpuBackend cpu(4);
  const KlSummary kl = CompareWithReference(cpu, "golden_f32.npy");
  EXPECT_LE(kl.kld_mean, 1e-6);
  EXPECT_EQ(kl.top1_agree, 1.0);
}

}  // namespace
}  // namespace dsv3::demo_model_logits_test
