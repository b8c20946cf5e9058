// Rejection sampling of speculative decoding: the emitted token must follow the target
// distribution p whatever the draft distribution q is. Checked by a chi-square goodness-of-fit
// test over many draws, with a control showing that the test catches a sampler that is off.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/sampling/random.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/speculative.h"

namespace dsv3::sampling_speculative_test {
namespace {

// Chi-square critical value at significance 0.001 for 7 degrees of freedom (8 categories).
constexpr double kChiSquare7At001 = 24.322;

double ChiSquare(const std::vector<int64_t>& counts, const std::vector<float>& p, int64_t n) {
  double chi = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double expected = p[i] * n;
    chi += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi;
}

// Emitted-token counts of `n` rounds: d ~ q, then VerifyDraft (or, with `accept_all`, the biased
// rule that keeps every draft).
std::vector<int64_t> Emitted(const std::vector<float>& p, const std::vector<float>& q, int64_t n,
                             bool accept_all = false) {
  SplitMix64 rng(12345);
  std::vector<int64_t> counts(p.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t d = DrawFrom(q, rng);
    counts[accept_all ? d : VerifyDraft(p, q, d, rng).token]++;
  }
  return counts;
}

const std::vector<float> kP = {0.30f, 0.20f, 0.15f, 0.10f, 0.10f, 0.07f, 0.05f, 0.03f};

TEST(SpeculativeSamplingTest, EmittedTokenFollowsTargetForDifferentDraft) {
  // A draft that favours other tokens (and gives token 0 less than p does).
  const std::vector<float> q = {0.05f, 0.05f, 0.10f, 0.30f, 0.10f, 0.10f, 0.10f, 0.20f};
  constexpr int64_t kN = 200000;
  EXPECT_LT(ChiSquare(Emitted(kP, q, kN), kP, kN), kChiSquare7At001);
  // Control: keeping every draft yields q, which the same test rejects by far.
  EXPECT_GT(ChiSquare(Emitted(kP, q, kN, /*accept_all=*/true), kP, kN), 100 * kChiSquare7At001);
}

TEST(SpeculativeSamplingTest, EmittedTokenFollowsTargetWhenDraftMissesSupport) {
  // q puts mass on tokens p never emits and none on some p does.
  const std::vector<float> p = {0.40f, 0.30f, 0.20f, 0.10f, 0, 0, 0, 0};
  const std::vector<float> q = {0.10f, 0, 0.20f, 0, 0.30f, 0.40f, 0, 0};
  constexpr int64_t kN = 200000;
  const std::vector<int64_t> counts = Emitted(p, q, kN);
  for (size_t i = 4; i < p.size(); ++i) EXPECT_EQ(counts[i], 0) << "token " << i;
  const std::vector<float> head(p.begin(), p.begin() + 4);
  const std::vector<int64_t> head_counts(counts.begin(), counts.begin() + 4);
  EXPECT_LT(ChiSquare(head_counts, head, kN), 16.266);  // 3 degrees of freedom, 0.001
}

TEST(SpeculativeSamplingTest, EqualDistributionsAlwaysAccept) {
  SplitMix64 rng(7);
  for (int i = 0; i < 10000; ++i) {
    const int32_t d = DrawFrom(kP, rng);
    const DraftVerdict v = VerifyDraft(kP, kP, d, rng);
    ASSERT_TRUE(v.accepted);
    ASSERT_EQ(v.token, d);
  }
}

TEST(SpeculativeSamplingTest, OneHotDistributionsAreGreedyVerification) {
  SplitMix64 rng(7);
  std::vector<float> p(8, 0), q(8, 0);
  p[3] = 1;
  q[3] = 1;
  EXPECT_EQ(VerifyDraft(p, q, 3, rng).token, 3);
  EXPECT_TRUE(VerifyDraft(p, q, 3, rng).accepted);
  q[3] = 0;
  q[5] = 1;
  const DraftVerdict v = VerifyDraft(p, q, 5, rng);
  EXPECT_FALSE(v.accepted);
  EXPECT_EQ(v.token, 3);
}

TEST(SamplerProbabilitiesTest, MatchesSampleFrequencies) {
  // Probabilities must be the distribution Sample draws from, filters included.
  Sampler sampler({0});
  SamplingParams params;
  params.temperature = 0.8f;
  params.top_k = 6;
  params.top_p = 0.9f;
  params.repetition_penalty = 1.3f;
  const std::vector<float> logits = {0.5f, 1.0f, -0.3f, 2.0f, 0.1f, 1.5f, -1.0f, 0.9f};
  SequenceSamplingState base(1, {3, 5});
  std::vector<float> probs;
  sampler.Probabilities(logits, params, base, probs);
  double total = 0;
  for (float x : probs) total += x;
  EXPECT_NEAR(total, 1.0, 1e-6);
  constexpr int64_t kN = 100000;
  std::vector<int64_t> counts(logits.size(), 0);
  for (int64_t i = 0; i < kN; ++i) {
    SequenceSamplingState state(1000 + i, {3, 5});
    counts[sampler.Sample(logits, params, state).token]++;
  }
  double chi = 0;
  int support = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i;
      continue;
    }
    ++support;
    chi += std::pow(counts[i] - probs[i] * kN, 2) / (probs[i] * kN);
  }
  ASSERT_GE(support, 3);
  EXPECT_LT(chi, 20.515);  // at most 5 degrees of freedom, 0.001
}

TEST(SamplerProbabilitiesTest, GreedyIsOneHotAtSampleChoice) {
  Sampler sampler({0});
  SamplingParams params;
  params.temperature = 0;
  params.min_tokens = 2;
  const std::vector<float> logits = {5.0f, 1.0f, 3.0f, 2.0f};  // EOS best, masked by min_tokens
  SequenceSamplingState state(1, {});
  std::vector<float> probs;
  sampler.Probabilities(logits, params, state, probs);
  EXPECT_EQ(probs, (std::vector<float>{0, 0, 1, 0}));
  EXPECT_EQ(sampler.Sample(logits, params, state).token, 2);
}

}  // namespace
}  // namespace dsv3::sampling_speculative_test
