#include "engine/sampling/speculative.h"

#include <algorithm>

namespace dsv3 {
namespace {

// Inverse CDF of the unnormalized weights w(i) (total > 0) at u in [0, 1).
template <typename Weight>
int32_t InverseCdf(int32_t n, Weight w, double total, double u) {
  const double target = u * total;
  double cumulative = 0;
  int32_t last_positive = 0;
  for (int32_t i = 0; i < n; ++i) {
    const double wi = w(i);
    if (wi <= 0) continue;
    cumulative += wi;
    last_positive = i;
    if (target < cumulative) return i;
  }
  return last_positive;  // rounding left the target past the sum
}

}  // namespace

int32_t DrawFrom(absl::Span<const float> probs, SplitMix64& rng) {
  const double u = rng.NextUniform();
  double total = 0;
  for (float p : probs) total += p;
  const int32_t n = static_cast<int32_t>(probs.size());
  if (total <= 0) return static_cast<int32_t>(std::max_element(probs.begin(), probs.end()) -
                                              probs.begin());
  return InverseCdf(n, [&](int32_t i) { return static_cast<double>(probs[i]); }, total, u);
}

DraftVerdict VerifyDraft(absl::Span<const float> p, absl::Span<const float> q, int32_t draft,
                         SplitMix64& rng) {
  const double u = rng.NextUniform();
  const double pd = p[draft], qd = q[draft];
  // u < p/q, written without the division (q(d) > 0: d was drawn from q).
  if (u * qd < pd) return {true, draft};
  const int32_t n = static_cast<int32_t>(p.size());
  const auto residual = [&](int32_t i) { return std::max(0.0, double{p[i]} - double{q[i]}); };
  double total = 0;
  for (int32_t i = 0; i < n; ++i) total += residual(i);
  // p <= q everywhere only when p == q up to rounding, where a rejection is rounding too: draw
  // from p itself.
  if (total <= 0) return {false, DrawFrom(p, rng)};
  return {false, InverseCdf(n, residual, total, rng.NextUniform())};
}

}  // namespace dsv3
