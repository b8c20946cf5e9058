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

// log(sum_i exp(logits[i])), in double. logits: [V].
double LogSumExp(std::span<const float> logits);

// The index of the largest value, the first one on ties (as numpy.argmax).
int64_t ArgMax(std::span<const float> values);

// What one scored position contributes.
struct PositionScore {
  double nll = 0;  // -log softmax(logits)[target]
  // With a base row only:
  double base_nll = 0;  // -log softmax(base)[target]
  double kld = 0;       // KL(P_base || P_this) = sum_i P_base(i) (log P_base(i) - log P_this(i))
  bool top1_agree = false;  // ArgMax(logits) == ArgMax(base)
};

// Scores one position: `logits` [V] of this run, `target` the token it predicts (in [0, V)),
// `base` [V] the base run's logits for the same position, or empty. Stateless, so rows can be
// scored on several threads. One exp per vocabulary entry and row: the KL divergence is
// sum_i P_base(i) (base_i - logits_i) - LogSumExp(base) + LogSumExp(logits), accumulated in
// the same pass as the base's normalizer; terms with P_base(i) == 0 add nothing.
PositionScore ScorePosition(std::span<const float> logits, int32_t target,
                            std::span<const float> base = {});

// The q-th percentile (q in [0, 100]) as numpy.percentile computes it by default: the sorted
// values at rank (n - 1) * q / 100, interpolated linearly between the two closest ranks.
// InvalidArgument on no values or q outside [0, 100].
absl::StatusOr<double> Percentile(std::vector<double> values, double q);

// Against a base run (--kl-base), over the same scored positions.
struct KlSummary {
  double kld_mean = 0;  // mean over positions of KL(P_base || P_this)
  double kld_p99 = 0;   // Percentile(per-position KL, 99)
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

// Sums the scored positions of one run, in the order they are added (so that a run's numbers
// do not depend on how many threads scored it). Keeps one double per position for the KL
// percentile; the logits themselves are not kept.
class Scorer {
 public:
  // with_base: every PositionScore added comes with a base row, and Summary reports kl.
  explicit Scorer(bool with_base) : with_base_(with_base) {}

  void Add(const PositionScore& score);

  // exp(mean NLL) of the positions so far, for progress lines (NaN before the first Add).
  double ppl() const;
  // FailedPrecondition when nothing was scored.
  absl::StatusOr<EvalSummary> Summary() const;

 private:
  bool with_base_;
  int64_t tokens_ = 0;
  double nll_sum_ = 0;
  double base_nll_sum_ = 0;
  int64_t top1_agree_ = 0;
  std::vector<double> kld_;  // [tokens] with a base run, else empty
};

}  // namespace dsv3
