// The scoring loop of dsv3-eval: every window of every sequence through the model runner, one
// prefill per window (or several windows as the sequences of one batch), scored as it comes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/eval/metrics.h"
#include "engine/model_runner.h"

namespace dsv3 {

struct EvalOptions {
  int32_t context = 512;      // tokens per window (engine/eval/windows.h)
  int32_t batch_windows = 1;  // windows per forward step
  int32_t score_threads = 1;  // threads scoring the rows of a step (they run between steps)
  std::string save_logits;    // when set: the scored logits, [tokens, vocab] float32 .npy
  std::string kl_base;        // when set: a --save-logits file of the same inputs to compare with
};

struct EvalResult {
  EvalSummary summary;
  int64_t windows = 0;
};

// Scores `sequences` (token ids, each of at least 2 tokens) with the model behind `runner`, whose
// cache must not be allocated yet (this allocates it: batch_windows windows of `context` tokens).
// The logits of the scored positions are saved, and compared with kl_base, in scoring order:
// sequence, then window, then position. Errors: a kl_base file whose shape is not
// [tokens, vocab] of this run (before any step runs), unreadable or unwritable files, and a
// failed step.
absl::StatusOr<EvalResult> Evaluate(ModelRunner& runner,
                                    const std::vector<std::vector<int32_t>>& sequences,
                                    const EvalOptions& options);

}  // namespace dsv3
