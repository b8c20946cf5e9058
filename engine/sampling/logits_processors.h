// Logits processors: the edits the sampler makes to one sequence's logits row before choosing a
// token. Each works in place on a [vocab] row; token ids outside the row are ignored.
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "engine/sampling/sampling_params.h"

namespace dsv3 {

class SequenceSamplingState;

// Repetition penalty p over tokens of the prompt or output (as in HF and vLLM: a positive logit
// is divided by p, a negative one multiplied by p, once per distinct token), then presence and
// frequency penalties over the output: logit -= presence + frequency * occurrences.
void ApplyPenalties(const SamplingParams& params, const SequenceSamplingState& state,
                    absl::Span<float> logits);

// Sets the logits of the EOS ids (unless params.ignore_eos) and of params.stop_token_ids to -inf.
void MaskStopTokens(const SamplingParams& params, absl::Span<const int32_t> eos_token_ids,
                    absl::Span<float> logits);

}  // namespace dsv3
