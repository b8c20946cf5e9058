// dsv3-eval's numbers from logits alone: NLL / perplexity, KL divergence, top-1, percentile.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "engine/eval/metrics.h"

namespace dsv3::eval_metrics_test {
namespace {

TEST(EvalMetricsTest, UniformLogitsScorePerplexityEqualToTheVocabulary) {
  for (int64_t vocab : {2, 7, 1024, 129280}) {
    Scorer scorer(/*with_base=*/false);
    const std::vector<float> logits(vocab, 3.25f);
    for (int32_t target : {0, 1, static_cast<int32_t>(vocab - 1)}) {
      scorer.Add(ScorePosition(logits, target));
    }
    auto s = scorer.Summary();
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->tokens, 3);
    EXPECT_NEAR(s->nll, std::log(static_cast<double>(vocab)), 1e-12);
    EXPECT_NEAR(s->ppl / vocab, 1.0, 1e-9) << vocab;
    EXPECT_FALSE(s->kl.has_value());
  }
}

TEST(EvalMetricsTest, NllIsTheMeanOfMinusLogSoftmaxAtTheTargets) {
  // Row 0: log_softmax([0, ln 3]) = [ln 1/4, ln 3/4]; row 1: [ln 1/2, ln 1/2].
  Scorer scorer(/*with_base=*/false);
  scorer.Add(ScorePosition(std::vector<float>{0.0f, static_cast<float>(std::log(3.0))}, 0));
  scorer.Add(ScorePosition(std::vector<float>{5.0f, 5.0f}, 1));
  auto s = scorer.Summary();
  ASSERT_TRUE(s.ok());
  const double want = (std::log(4.0) + std::log(2.0)) / 2;
  EXPECT_NEAR(s->nll, want, 1e-7);  // ln 3 rounded to float
  EXPECT_NEAR(s->ppl, std::sqrt(8.0), 1e-6);
}

TEST(EvalMetricsTest, LogitsAgainstThemselvesHaveZeroKlAndFullTopOneAgreement) {
  const int64_t vocab = 50;
  Scorer scorer(/*with_base=*/true);
  std::vector<float> logits(vocab);
  for (int pos = 0; pos < 20; ++pos) {
    for (int64_t i = 0; i < vocab; ++i) logits[i] = std::sin(0.37f * i + pos) * 4;
    scorer.Add(ScorePosition(logits, pos % vocab, logits));
  }
  auto s = scorer.Summary();
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(s->kl.has_value());
  EXPECT_EQ(s->kl->kld_mean, 0.0);
  EXPECT_EQ(s->kl->kld_p99, 0.0);
  EXPECT_EQ(s->kl->kld_max, 0.0);
  EXPECT_EQ(s->kl->top1_agree, 1.0);
  EXPECT_EQ(s->kl->ppl_base, s->ppl);
  EXPECT_EQ(s->kl->ppl_ratio, 1.0);
}

// Two positions over a vocabulary of 2, by hand. Logits [0, ln 3] give P = (1/4, 3/4).
//  position 0: base (1/4, 3/4), this (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2); argmaxes 1 vs 0
//              (a tie takes the first index).
//  position 1: base (1/2, 1/2), this (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3); argmaxes 0 vs 1.
//  targets 1, 1: this NLL = (ln 2 + ln 4/3) / 2, base NLL = (ln 4/3 + ln 2) / 2.
TEST(EvalMetricsTest, TwoPositionKlByHand) {
  const float ln3 = static_cast<float>(std::log(3.0));
  Scorer scorer(/*with_base=*/true);
  scorer.Add(ScorePosition(/*logits=*/std::vector<float>{1.0f, 1.0f}, 1,
                           /*base=*/std::vector<float>{0.0f, ln3}));
  scorer.Add(ScorePosition(std::vector<float>{0.0f, ln3}, 1, std::vector<float>{2.0f, 2.0f}));
  auto s = scorer.Summary();
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(s->kl.has_value());
  const double kl0 = 0.25 * std::log(0.5) + 0.75 * std::log(1.5);
  const double kl1 = 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0);
  EXPECT_NEAR(s->kl->kld_mean, (kl0 + kl1) / 2, 1e-7);
  EXPECT_NEAR(s->kl->kld_max, std::max(kl0, kl1), 1e-7);
  EXPECT_NEAR(s->kl->kld_p99, std::min(kl0, kl1) + 0.99 * std::abs(kl0 - kl1), 1e-7);
  EXPECT_EQ(s->kl->top1_agree, 0.0);
  EXPECT_NEAR(s->nll, (std::log(2.0) + std::log(4.0 / 3.0)) / 2, 1e-7);
  EXPECT_NEAR(s->kl->ppl_base, s->ppl, 1e-7);
  EXPECT_NEAR(s->kl->ppl_ratio, 1.0, 1e-7);
}

TEST(EvalMetricsTest, KlIgnoresTermsWhereTheBaseHasNoMass) {
  const float inf = std::numeric_limits<float>::infinity();
  // P_base = (1, 0), P_this = (1/2, 1/2): KL = ln 2; against (1, 0) itself: 0, not NaN.
  EXPECT_NEAR(ScorePosition(std::vector<float>{0, 0}, 0, std::vector<float>{0, -inf}).kld,
              std::log(2.0), 1e-15);
  EXPECT_EQ(ScorePosition(std::vector<float>{0, -inf}, 0, std::vector<float>{0, -inf}).kld, 0.0);
}

// Large logits shifted by a constant are the same distribution: no KL, no cancellation error.
TEST(EvalMetricsTest, KlOfAShiftedRowIsZeroToRounding) {
  std::vector<float> base(1000), shifted(1000);
  for (int i = 0; i < 1000; ++i) {
    base[i] = std::round(30 * std::sin(0.01f * i * i) * 1024) / 1024;  // 1/1024 steps below 32
    shifted[i] = base[i] + 16;                                         // so exact in float
  }
  const PositionScore s = ScorePosition(shifted, 3, base);
  EXPECT_NEAR(s.kld, 0.0, 1e-12);
  EXPECT_NEAR(s.nll, s.base_nll, 1e-12);
  EXPECT_TRUE(s.top1_agree);
}

TEST(EvalMetricsTest, PercentileInterpolatesLikeNumpy) {
  // numpy.percentile(range(1, 101), 99) == 99.01; of [0, 10], 99 -> 9.9; of one value: it.
  std::vector<double> hundred;
  for (int i = 100; i >= 1; --i) hundred.push_back(i);  // unsorted on purpose
  EXPECT_NEAR(*Percentile(hundred, 99), 99.01, 1e-12);
  EXPECT_NEAR(*Percentile({0.0, 10.0}, 99), 9.9, 1e-12);
  EXPECT_EQ(*Percentile({4.0}, 99), 4.0);
  EXPECT_EQ(*Percentile({3.0, 1.0, 2.0}, 0), 1.0);
  EXPECT_EQ(*Percentile({3.0, 1.0, 2.0}, 100), 3.0);
  EXPECT_EQ(*Percentile({3.0, 1.0, 2.0}, 50), 2.0);
  EXPECT_FALSE(Percentile({}, 99).ok());
  EXPECT_FALSE(Percentile({1.0}, 101).ok());
}

TEST(EvalMetricsTest, ArgMaxTakesTheFirstOfTies) {
  EXPECT_EQ(ArgMax(std::vector<float>{1, 3, 3, 2}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{-1}), 0);
}

TEST(EvalMetricsTest, NothingScoredIsAnError) {
  EXPECT_EQ(Scorer(false).Summary().status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dsv3::eval_metrics_test
