#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "engine/sampling/logits_processors.h"
#include "engine/sampling/random.h"
#include "engine/sampling/sampler.h"

namespace dsv3::sampling_sampler_test {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;

constexpr int32_t kEos = 0;

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

std::vector<float> RandomLogits(SplitMix64& rng, int vocab) {
  std::vector<float> logits(vocab);
  for (float& x : logits) x = static_cast<float>(rng.NextUniform() * 8 - 4);
  return logits;
}

TEST(SplitMix64Test, MatchesReferenceOutputsForSeedZero) {
  SplitMix64 rng(0);
  EXPECT_EQ(rng.Next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.Next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(rng.Next(), 0x06c45d188009454fULL);
}

TEST(SplitMix64Test, UniformIsInUnitInterval) {
  SplitMix64 rng(1);
  for (int i = 0; i < 10000; ++i) {
    const double u = rng.NextUniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(SamplerTest, GreedyTakesArgmaxAndLowestIdOnTies) {
  struct Row {
    std::vector<float> logits;
    int32_t expected;
  };
  const Row rows[] = {
      {{1, 5, 2}, 1},
      {{3, 1, 3}, 0},
      {{-2, -1, -1, -5}, 1},
      {{0.5f}, 0},
  };
  Sampler sampler({});
  for (const Row& row : rows) {
    SequenceSamplingState state(1, {});
    EXPECT_EQ(sampler.Sample(row.logits, Greedy(), state).token, row.expected);
  }
}

TEST(SamplerTest, TopKOneEqualsGreedy) {
  SplitMix64 logits_rng(3);
  Sampler sampler({});
  SamplingParams top1;
  top1.top_k = 1;
  top1.temperature = 1.5f;
  SequenceSamplingState greedy_state(5, {}), top1_state(6, {});
  for (int i = 0; i < 200; ++i) {
    const std::vector<float> logits = RandomLogits(logits_rng, 50);
    EXPECT_EQ(sampler.Sample(logits, top1, top1_state).token,
              sampler.Sample(logits, Greedy(), greedy_state).token);
  }
}

// The tokens of one sequence depend on its seed only, whatever else is sampled in between and in
// whatever order (as when the batch around it changes from step to step).
TEST(SamplerTest, SameSeedSameTokensWhateverTheInterleaving) {
  SplitMix64 logits_rng(11);
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < 100; ++i) rows.push_back(RandomLogits(logits_rng, 32));
  SamplingParams params;
  params.seed = 1234;
  params.temperature = 0.9f;
  params.top_p = 0.95f;

  Sampler alone_sampler({kEos});
  SequenceSamplingState alone(*params.seed, {1, 2, 3});
  std::vector<int32_t> expected;
  for (const auto& row : rows) expected.push_back(alone_sampler.Sample(row, params, alone).token);

  Sampler batch_sampler({kEos});
  SequenceSamplingState target(*params.seed, {1, 2, 3});
  std::vector<SequenceSamplingState> others;
  for (uint64_t s = 0; s < 5; ++s) others.emplace_back(s, std::vector<int32_t>{4});
  std::vector<int32_t> got;
  for (size_t i = 0; i < rows.size(); ++i) {
    // A different number of other sequences before and after ours at every step.
    for (size_t j = 0; j < i % 4; ++j) batch_sampler.Sample(rows[(i + j) % 100], params, others[j]);
    got.push_back(batch_sampler.Sample(rows[i], params, target).token);
    for (size_t j = 0; j < i % 3; ++j) batch_sampler.Sample(rows[j], Greedy(), others[4 - j]);
  }
  EXPECT_EQ(got, expected);

  SequenceSamplingState other_seed(*params.seed + 1, {1, 2, 3});
  std::vector<int32_t> different;
  for (const auto& row : rows)
    different.push_back(alone_sampler.Sample(row, params, other_seed).token);
  EXPECT_NE(different, expected);
}

// Draws `n` tokens and returns the chi-square statistic against `expected` probabilities
// (tokens with expected probability 0 must never be drawn).
double ChiSquare(const std::vector<float>& logits, const SamplingParams& params,
                 const std::vector<double>& expected, int n) {
  Sampler sampler({});
  SequenceSamplingState state(*params.seed, {});
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[sampler.Sample(logits, params, state).token];
  double chi2 = 0;
  for (size_t t = 0; t < logits.size(); ++t) {
    if (expected[t] == 0) {
      EXPECT_EQ(counts[t], 0) << "token " << t;
      continue;
    }
    const double e = expected[t] * n;
    chi2 += (counts[t] - e) * (counts[t] - e) / e;
  }
  return chi2;
}

TEST(SamplerTest, DistributionMatchesTemperatureTopKTopPAndMinP) {
  const std::vector<float> logits = {std::log(0.1f), std::log(0.2f), std::log(0.3f),
                                     std::log(0.4f)};
  struct Row {
    float temperature, top_p, min_p;
    int32_t top_k;
    std::vector<double> expected;
  };
  const double s2 = std::sqrt(0.1) + std::sqrt(0.2) + std::sqrt(0.3) + std::sqrt(0.4);
  const Row rows[] = {
      {1.0f, 1.0f, 0.0f, -1, {0.1, 0.2, 0.3, 0.4}},
      {2.0f,
       1.0f,
       0.0f,
       -1,
       {std::sqrt(0.1) / s2, std::sqrt(0.2) / s2, std::sqrt(0.3) / s2, std::sqrt(0.4) / s2}},
      {0.5f, 1.0f, 0.0f, 0, {0.01 / 0.3, 0.04 / 0.3, 0.09 / 0.3, 0.16 / 0.3}},
      {1.0f, 0.5f, 0.0f, -1, {0, 0, 0.3 / 0.7, 0.4 / 0.7}},  // 0.4 + 0.3 reaches 0.5
      {1.0f, 0.75f, 0.0f, -1, {0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9}},
      {1.0f, 1.0f, 0.0f, 3, {0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9}},
      {1.0f, 1.0f, 0.6f, -1, {0, 0, 0.3 / 0.7, 0.4 / 0.7}},           // keep p >= 0.24
      {1.0f, 1.0f, 0.45f, -1, {0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9}},  // keep p >= 0.18
      {1.0f, 0.9f, 0.6f, 2, {0, 0, 0.3 / 0.7, 0.4 / 0.7}},
  };
  // 3 degrees of freedom at most: P(chi2 > 20) < 2e-4. Seeds are fixed, so this is exact anyway.
  for (size_t i = 0; i < std::size(rows); ++i) {
    SamplingParams p;
    p.seed = 100 + i;
    p.temperature = rows[i].temperature;
    p.top_p = rows[i].top_p;
    p.min_p = rows[i].min_p;
    p.top_k = rows[i].top_k;
    EXPECT_LT(ChiSquare(logits, p, rows[i].expected, 40000), 20.0) << "row " << i;
  }
}

TEST(LogitsProcessorsTest, PenaltiesMatchHandComputedValues) {
  // Prompt {0, 1}; output 3, 1, 3.
  SequenceSamplingState state(0, {0, 1});
  for (int32_t t : {3, 1, 3}) state.AppendOutput(t);
  struct Row {
    float repetition, presence, frequency;
    std::vector<float> expected;
  };
  const Row rows[] = {
      {1.0f, 0.0f, 0.0f, {2.0f, -1.0f, 0.5f, 3.0f}},
      {2.0f, 0.0f, 0.0f, {1.0f, -2.0f, 0.5f, 1.5f}},    // token 2 was never seen
      {1.0f, 0.5f, 0.0f, {2.0f, -1.5f, 0.5f, 2.5f}},    // output tokens only
      {1.0f, 0.0f, 0.25f, {2.0f, -1.25f, 0.5f, 2.5f}},  // per occurrence
      {2.0f, 0.5f, -0.25f, {1.0f, -2.25f, 0.5f, 1.5f}},
  };
  for (size_t i = 0; i < std::size(rows); ++i) {
    std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f};
    SamplingParams p;
    p.repetition_penalty = rows[i].repetition;
    p.presence_penalty = rows[i].presence;
    p.frequency_penalty = rows[i].frequency;
    ApplyPenalties(p, state, absl::MakeSpan(logits));
    EXPECT_THAT(
        logits,
        ElementsAre(FloatNear(rows[i].expected[0], 1e-6), FloatNear(rows[i].expected[1], 1e-6),
                    FloatNear(rows[i].expected[2], 1e-6), FloatNear(rows[i].expected[3], 1e-6)))
        << "row " << i;
  }
}

TEST(LogitsProcessorsTest, MaskStopTokens) {
  const float inf = std::numeric_limits<float>::infinity();
  SamplingParams p;
  p.stop_token_ids = {2, 99};
  std::vector<float> logits = {1, 1, 1, 1};
  MaskStopTokens(p, std::vector<int32_t>{0}, absl::MakeSpan(logits));
  EXPECT_THAT(logits, ElementsAre(-inf, 1, -inf, 1));
  p.ignore_eos = true;
  logits = {1, 1, 1, 1};
  MaskStopTokens(p, std::vector<int32_t>{0}, absl::MakeSpan(logits));
  EXPECT_THAT(logits, ElementsAre(1, 1, -inf, 1));
}

TEST(SamplerTest, PenaltiesChangeTheGreedyChoice) {
  Sampler sampler({});
  SamplingParams p = Greedy();
  p.frequency_penalty = 1.0f;
  SequenceSamplingState state(0, {});
  std::vector<int32_t> tokens;
  const std::vector<float> logits = {2.5f, 2.0f, 0.0f};
  for (int i = 0; i < 5; ++i) tokens.push_back(sampler.Sample(logits, p, state).token);
  // Each occurrence costs 1; token 0 vs 1: 2.5 vs 2, 1.5 vs 2, 1.5 vs 1, 0.5 vs 1, 0.5 vs 0.
  EXPECT_THAT(tokens, ElementsAre(0, 1, 0, 1, 0));
}

TEST(SamplerTest, MinTokensMasksEosAndStopTokensUntilReached) {
  Sampler sampler({kEos});
  SamplingParams p = Greedy();
  p.min_tokens = 2;
  p.stop_token_ids = {1};
  SequenceSamplingState state(0, {});
  const std::vector<float> logits = {9, 8, 1, 5};
  std::vector<int32_t> tokens;
  for (int i = 0; i < 3; ++i) tokens.push_back(sampler.Sample(logits, p, state).token);
  EXPECT_THAT(tokens, ElementsAre(3, 3, kEos));

  p.ignore_eos = true;
  SequenceSamplingState state2(0, {});
  EXPECT_EQ(sampler.Sample(logits, p, state2).token, kEos);  // not a stop token now
}

TEST(SamplerTest, LogprobsComeFromRawLogits) {
  Sampler sampler({});
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  double z = 0;
  for (float x : logits) z += std::exp(x);
  const auto lp = [&](int t) { return static_cast<float>(logits[t] - std::log(z)); };

  SamplingParams p = Greedy();
  p.logprobs = 3;
  p.repetition_penalty = 1.7f;  // changes the choice, not the reported logprobs
  SequenceSamplingState state(0, {1});
  const SampledToken s = sampler.Sample(logits, p, state);
  EXPECT_EQ(s.token, 3);
  EXPECT_FLOAT_EQ(s.logprob, lp(3));
  ASSERT_EQ(s.top_logprobs.size(), 3u);
  EXPECT_EQ(s.top_logprobs[0].token, 1);
  EXPECT_EQ(s.top_logprobs[1].token, 3);
  EXPECT_EQ(s.top_logprobs[2].token, 2);
  for (const TokenLogprob& t : s.top_logprobs) EXPECT_FLOAT_EQ(t.logprob, lp(t.token));

  p.logprobs = 0;
  EXPECT_TRUE(sampler.Sample(logits, p, state).top_logprobs.empty());
}

}  // namespace
}  // namespace dsv3::sampling_sampler_test
