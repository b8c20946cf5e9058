// The numbers dsv3-eval reports, from logits alone: negative log-likelihood and perplexity of a
// run, and how far a run's distributions are from a base run's (KL divergence, top-1
// agreement). Everything is computed in double from float32 logits; no model is involved, so
// the unit tests and a Python reference script can check it exactly.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3 {

// log_softmax of one row: out[i] = logits[i] - log(sum_j exp(logits[j])). logits, out: [V].
void LogSoftmax(std::span<const float> logits, std::span<double> out);

// The index of the largest value, the first one on ties (as numpy.argmax).
int64_t ArgMax(std::span<const float> values);

// KL(P || Q) = sum_i p_i (log p_i - log q_i), from log-probabilities [V]; terms with p_i == 0
// add nothing (even where q_i == 0).
double KlDivergence(std::span<const double> log_p, std::span<const double> log_q);

// The q-th percentile (q in [0, 100]) as numpy.percentile computes it by default: the sorted
// values at rank (n - 1) * q / 100, interpolated linearly between the two closest ranks.
// InvalidArgument on no values or q outside [0, 100].
absl::StatusOr<double> Percentile(std::vector<double> values, double q);

// Against a base run (--kl-base), over the same scored positions.
struct KlSummary {
  double kld_mean = 0;    // mean over positions of KL(P_base || P_this)
  double kld_p99 = 0;     // Percentile(per-position KL, 99)
  double kld_max = 0;
  double top1_agree = 0;  // fraction of positions where both argmaxes are the same token
  double ppl_base = 0;    // the base run's perplexity on the same targets
  double ppl_ratio = 0;   // this run's ppl / ppl_base
};

struct EvalSummary {
  int64_t tokens = 0;  // scored positions
  double nll = 0;      // mean negative log-likelihood of the targets (natural log)
  double ppl = 0;      // exp(nll)
  std::optional<KlSummary> kl;
};

// Accumulates the scored positions of one run, in any order. Keeps one double per position for
// the KL percentile; the logits themselves are not kept.
class Scorer {
 public:
  explicit Scorer(int64_t vocab) : log_p_(vocab), log_base_(vocab) {}

  // One scored position: `logits` [V] of this run, `target` the token it predicts (in [0, V)),
  // `base` [V] the base run's logits for the same position, or empty when there is no base run
  // (the same for every call).
  void Add(std::span<const float> logits, int32_t target, std::span<const float> base = {});

  // exp(mean NLL) of the positions so far, for progress lines (NaN before the first Add).
  double ppl() const;
  // FailedPrecondition when nothing was scored.
  absl::StatusOr<EvalSummary> Summary() const;

 private:
  std::vector<double> log_p_;     // [V], scratch
  std::vector<double> log_base_;  // [V], scratch
  int64_t tokens_ = 0;
  double nll_sum_ = 0;
  double base_nll_sum_ = 0;
  int64_t top1_agree_ = 0;
  std::vector<double> kld_;  // [tokens] with a base run, else empty
};

}  // namespace dsv3
