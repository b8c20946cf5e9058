#include "engine/eval/metrics.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace dsv3 {

double LogSumExp(std::span<const float> logits) {
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(x - max);
  return max + std::log(sum);
}

int64_t ArgMax(std::span<const float> values) {
  return std::max_element(values.begin(), values.end()) - values.begin();
}

PositionScore ScorePosition(std::span<const float> logits, int32_t target,
                            std::span<const float> base) {
  PositionScore score;
  const double lse = LogSumExp(logits);
  score.nll = lse - logits[target];
  if (base.empty()) return score;
  // e_i = exp(base_i - max): P_base(i) = e_i / sum; weighted = sum_i e_i (base_i - logits_i).
  const double max = *std::max_element(base.begin(), base.end());
  double sum = 0;
  double weighted = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double e = std::exp(base[i] - max);
    sum += e;
    if (e > 0) weighted += e * (static_cast<double>(base[i]) - logits[i]);
  }
  const double base_lse = max + std::log(sum);
  score.base_nll = base_lse - base[target];
  score.kld = weighted / sum - base_lse + lse;
  score.top1_agree = ArgMax(logits) == ArgMax(base);
  return score;
}

absl::StatusOr<double> Percentile(std::vector<double> values, double q) {
  if (values.empty()) return absl::InvalidArgumentError("percentile of no values");
  if (!(q >= 0 && q <= 100)) {
    return absl::InvalidArgumentError(absl::StrCat("percentile ", q, " is outside [0, 100]"));
  }
  std::sort(values.begin(), values.end());
  const double rank = (values.size() - 1) * q / 100;
  const auto lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - lo) * (values[hi] - values[lo]);
}

void Scorer::Add(const PositionScore& score) {
  ++tokens_;
  nll_sum_ += score.nll;
  if (!with_base_) return;
  base_nll_sum_ += score.base_nll;
  kld_.push_back(score.kld);
  if (score.top1_agree) ++top1_agree_;
}

double Scorer::ppl() const { return std::exp(nll_sum_ / tokens_); }

absl::StatusOr<EvalSummary> Scorer::Summary() const {
  if (tokens_ == 0) return absl::FailedPreconditionError("no position was scored");
  EvalSummary s;
  s.tokens = tokens_;
  s.nll = nll_sum_ / tokens_;
  s.ppl = ppl();
  if (with_base_) {
    KlSummary kl;
    double sum = 0;
    for (double d : kld_) sum += d;
    kl.kld_mean = sum / tokens_;
    kl.kld_p99 = *Percentile(kld_, 99);
    kl.kld_max = *std::max_element(kld_.begin(), kld_.end());
    kl.top1_agree = static_cast<double>(top1_agree_) / tokens_;
    kl.ppl_base = std::exp(base_nll_sum_ / tokens_);
    kl.ppl_ratio = s.ppl / kl.ppl_base;
    s.kl = kl;
  }
  return s;
}

}  // namespace dsv3
