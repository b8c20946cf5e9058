// Rejection sampling for speculative decoding (Leviathan et al. 2023, "Fast Inference from
// Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model
// Decoding with Speculative Sampling"): a draft token d drawn from a draft distribution q is
// accepted with probability min(1, p(d) / q(d)) against the target distribution p; on rejection
// the token comes from norm(max(0, p - q)). Either way the token is distributed exactly as p,
// whatever q is. With one-hot p and q (greedy) this accepts exactly when d is p's token and
// otherwise returns p's token.
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "engine/sampling/random.h"

namespace dsv3 {

struct DraftVerdict {
  bool accepted = false;
  int32_t token = 0;  // the draft when accepted, else the replacement
};

// p and q: probabilities over the same vocabulary (summing to 1); q(draft) > 0. Draws one uniform
// from `rng` to decide, and one more on rejection.
DraftVerdict VerifyDraft(absl::Span<const float> p, absl::Span<const float> q, int32_t draft,
                         SplitMix64& rng);

// A token drawn from `probs` (summing to 1) with one uniform from `rng`; the most likely token
// wins ties of the inverse CDF's rounding.
int32_t DrawFrom(absl::Span<const float> probs, SplitMix64& rng);

}  // namespace dsv3
