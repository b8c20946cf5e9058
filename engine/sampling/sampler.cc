#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/random/random.h"
#include "engine/sampling/logits_processors.h"

namespace dsv3 {
namespace {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

// Higher logit first, lower id on ties: a total order, so results never depend on sort stability.
bool Better(float a_logit, int32_t a_token, float b_logit, int32_t b_token) {
  return a_logit > b_logit || (a_logit == b_logit && a_token < b_token);
}

int32_t Argmax(absl::Span<const float> logits) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(logits.size()); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

// log(sum(exp(logits))): terms in float, their sum in double.
double LogSumExp(absl::Span<const float> logits) {
  const float max = *std::max_element(logits.begin(), logits.end());
  if (!std::isfinite(max)) return max;
  double sum = 0;
  for (float x : logits) sum += std::exp(x - max);
  return max + std::log(sum);
}

std::vector<TokenLogprob> TopLogprobs(absl::Span<const float> logits, double lse, int32_t n) {
  std::vector<int32_t> ids(logits.size());
  for (int32_t i = 0; i < static_cast<int32_t>(ids.size()); ++i) ids[i] = i;
  n = std::min<int32_t>(n, static_cast<int32_t>(ids.size()));
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                    [&](int32_t a, int32_t b) { return Better(logits[a], a, logits[b], b); });
  std::vector<TokenLogprob> top;
  top.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    top.push_back({ids[i], static_cast<float>(logits[ids[i]] - lse)});
  }
  return top;
}

}  // namespace

SequenceSamplingState::SequenceSamplingState(uint64_t seed, absl::Span<const int32_t> prompt_ids)
    : rng_(seed), prompt_tokens_(prompt_ids.begin(), prompt_ids.end()) {}

uint64_t SequenceSamplingState::RandomSeed() {
  absl::BitGen gen;
  return absl::Uniform<uint64_t>(gen);
}

void SequenceSamplingState::AppendOutput(int32_t token) {
  ++output_counts_[token];
  ++num_output_tokens_;
}

Sampler::Sampler(std::vector<int32_t> eos_token_ids) : eos_token_ids_(std::move(eos_token_ids)) {}

SampledToken Sampler::Sample(absl::Span<const float> logits, const SamplingParams& params,
                             SequenceSamplingState& state) {
  assert(!logits.empty());
  const double u = state.rng().NextUniform();
  Prepare(logits, params, state);
  int32_t token = params.temperature < kGreedyTemperature ? Argmax(logits_) : Draw(params, u);
  // Everything masked (min_tokens over a vocabulary of stop tokens only): the model's choice.
  if (logits_[token] == kMasked) token = Argmax(logits);
  return Take(logits, token, params, state);
}

void Sampler::Probabilities(absl::Span<const float> logits, const SamplingParams& params,
                            const SequenceSamplingState& state, std::vector<float>& probs) {
  assert(!logits.empty());
  Prepare(logits, params, state);
  probs.assign(logits.size(), 0.0f);
  if (params.temperature >= kGreedyTemperature) {
    const double total = Filter(params);
    if (!candidates_.empty()) {
      for (const Candidate& c : candidates_) probs[c.token] = static_cast<float>(c.weight / total);
      return;
    }
  }
  int32_t token = Argmax(logits_);
  if (logits_[token] == kMasked) token = Argmax(logits);
  probs[token] = 1.0f;
}

SampledToken Sampler::Take(absl::Span<const float> logits, int32_t token,
                           const SamplingParams& params, SequenceSamplingState& state) {
  SampledToken result;
  result.token = token;
  // The log-softmax costs a pass of exp over the vocabulary, several times the rest of greedy
  // sampling on a 129K vocabulary: only when asked for.
  if (params.logprobs > 0) {
    const double lse = LogSumExp(logits);
    result.logprob = static_cast<float>(logits[token] - lse);
    result.top_logprobs = TopLogprobs(logits, lse, params.logprobs);
  }
  state.AppendOutput(token);
  return result;
}

void Sampler::Prepare(absl::Span<const float> logits, const SamplingParams& params,
                      const SequenceSamplingState& state) {
  logits_.assign(logits.begin(), logits.end());
  ApplyPenalties(params, state, absl::MakeSpan(logits_));
  if (state.num_output_tokens() < params.min_tokens) {
    MaskStopTokens(params, eos_token_ids_, absl::MakeSpan(logits_));
  }
}

int32_t Sampler::Draw(const SamplingParams& params, double u) {
  const double total = Filter(params);
  if (candidates_.empty()) return 0;  // all masked; Sample falls back to the raw argmax
  // Inverse CDF over the candidates in their current order.
  const double target = u * total;
  double cumulative = 0;
  for (const Candidate& c : candidates_) {
    cumulative += c.weight;
    if (target < cumulative) return c.token;
  }
  return candidates_.back().token;
}

double Sampler::Filter(const SamplingParams& params) {
  // candidates_: the unmasked tokens with logits / temperature, in id order until sorted.
  candidates_.clear();
  float max_logit = kMasked;
  for (int32_t i = 0; i < static_cast<int32_t>(logits_.size()); ++i) {
    if (logits_[i] > kMasked) {
      candidates_.push_back({logits_[i] / params.temperature, i, 0.0});
      max_logit = std::max(max_logit, candidates_.back().logit);
    }
  }
  if (candidates_.empty()) return 0;
  const auto better = [](const Candidate& a, const Candidate& b) {
    return Better(a.logit, a.token, b.logit, b.token);
  };
  size_t sorted_end = 0;  // candidates_[0, sorted_end) are the best ones, best first
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < candidates_.size()) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + params.top_k, candidates_.end(),
                      better);
    candidates_.resize(params.top_k);
    sorted_end = candidates_.size();
  }

  // Unnormalized probabilities relative to the most likely candidate (weight 1).
  double total = 0;
  for (Candidate& c : candidates_) {
    c.weight = std::exp(c.logit - max_logit);
    total += c.weight;
  }
  if (params.top_p < 1.0f) {
    // Keep the shortest best-first prefix whose mass reaches top_p: token i stays while the mass
    // before it is short of top_p. Top-p usually keeps few tokens of a large vocabulary, so the
    // head is sorted in growing stretches rather than the whole vocabulary at once.
    const double target = params.top_p * total;
    double before = 0;
    size_t keep = 0;
    while (keep < candidates_.size() && before < target) {
      if (keep == sorted_end) {
        // Select the next best stretch (linear time), then sort only that stretch.
        const auto begin = candidates_.begin() + sorted_end;
        const size_t next = std::min(candidates_.size(), std::max<size_t>(64, 2 * sorted_end));
        std::nth_element(begin, candidates_.begin() + next - 1, candidates_.end(), better);
        std::sort(begin, candidates_.begin() + next, better);
        sorted_end = next;
      }
      before += candidates_[keep++].weight;
    }
    candidates_.resize(keep);
    total = before;
  }
  if (params.min_p > 0.0f) {
    // The best candidate has weight 1, so min_p * top probability is min_p in weight units.
    std::erase_if(candidates_, [&](const Candidate& c) { return c.weight < params.min_p; });
    total = 0;
    for (const Candidate& c : candidates_) total += c.weight;
  }

  return total;
}

}  // namespace dsv3
