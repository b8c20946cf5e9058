#include "engine/eval/metrics.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace dsv3 {

void LogSoftmax(std::span<const float> logits, std::span<double> out) {
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(x - max);
  const double log_sum = max + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_sum;
}

int64_t ArgMax(std::span<const float> values) {
  return std::max_element(values.begin(), values.end()) - values.begin();
}

double KlDivergence(std::span<const double> log_p, std::span<const double> log_q) {
  double kl = 0;
  for (size_t i = 0; i < log_p.size(); ++i) {
    const double p = std::exp(log_p[i]);
    if (p > 0) kl += p * (log_p[i] - log_q[i]);
  }
  return kl;
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

void Scorer::Add(std::span<const float> logits, int32_t target, std::span<const float> base) {
  LogSoftmax(logits, log_p_);
  ++tokens_;
  nll_sum_ -= log_p_[target];
  if (base.empty()) return;
  LogSoftmax(base, log_base_);
  base_nll_sum_ -= log_base_[target];
  kld_.push_back(KlDivergence(log_base_, log_p_));
  if (ArgMax(logits) == ArgMax(base)) ++top1_agree_;
}

double Scorer::ppl() const { return std::exp(nll_sum_ / tokens_); }

absl::StatusOr<EvalSummary> Scorer::Summary() const {
  if (tokens_ == 0) return absl::FailedPreconditionError("no position was scored");
  EvalSummary s;
  s.tokens = tokens_;
  s.nll = nll_sum_ / tokens_;
  s.ppl = ppl();
  if (!kld_.empty()) {
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
