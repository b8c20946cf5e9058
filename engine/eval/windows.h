// Window planning for dsv3-eval: which prefills a sequence becomes and which of their positions
// are scored. Pure arithmetic, so that a Python script can reproduce it for reference files.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3 {

// One prefill: tokens [begin, begin + length) of a sequence, run from position 0 with an empty
// cache. The logits at positions first_scored .. length - 2 are scored, position j predicting
// token j + 1 of the window.
struct EvalWindow {
  int64_t begin = 0;
  int32_t length = 0;
  int32_t first_scored = 0;

  int32_t num_scored() const { return length - 1 - first_scored; }
  bool operator==(const EvalWindow&) const = default;
};

// The windows of a sequence of `num_tokens` tokens for a context of `context` tokens:
//  - num_tokens <= context: one window in which every position is scored (num_tokens - 1);
//  - longer: consecutive, non-overlapping windows of `context` tokens (the last may be shorter),
//    each scoring only its second half (positions >= length / 2), as llama-perplexity does, so
//    that every scored token sees at least length / 2 tokens before it. A last piece that would
//    score nothing (fewer than 3 tokens) is dropped.
// InvalidArgument when num_tokens < 2 (nothing to predict) or context < 3 (a window of a long
// sequence would score nothing).
absl::StatusOr<std::vector<EvalWindow>> PlanWindows(int64_t num_tokens, int32_t context);

}  // namespace dsv3
