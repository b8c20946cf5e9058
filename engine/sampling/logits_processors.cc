#include "engine/sampling/logits_processors.h"

#include <limits>

#include "engine/sampling/sampler.h"

namespace dsv3 {
namespace {

bool InRange(int32_t token, absl::Span<float> logits) {
  return token >= 0 && static_cast<size_t>(token) < logits.size();
}

}  // namespace

void ApplyPenalties(const SamplingParams& params, const SequenceSamplingState& state,
                    absl::Span<float> logits) {
  if (params.repetition_penalty != 1.0f) {
    const float p = params.repetition_penalty;
    const auto penalize = [&](int32_t token) {
      if (!InRange(token, logits)) return;
      float& x = logits[token];
      x = x > 0 ? x / p : x * p;
    };
    for (int32_t token : state.prompt_tokens()) penalize(token);
    for (const auto& [token, count] : state.output_counts()) {
      if (!state.prompt_tokens().contains(token)) penalize(token);
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    for (const auto& [token, count] : state.output_counts()) {
      if (InRange(token, logits)) {
        logits[token] -= params.presence_penalty + params.frequency_penalty * count;
      }
    }
  }
}

void MaskStopTokens(const SamplingParams& params, absl::Span<const int32_t> eos_token_ids,
                    absl::Span<float> logits) {
  const auto mask = [&](int32_t token) {
    if (InRange(token, logits)) logits[token] = -std::numeric_limits<float>::infinity();
  };
  if (!params.ignore_eos) {
    for (int32_t token : eos_token_ids) mask(token);
  }
  for (int32_t token : params.stop_token_ids) mask(token);
}

}  // namespace dsv3
