#include "engine/model/rope.h"

#include <algorithm>
#include <cmath>

namespace dsv3 {

namespace {

double YarnMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// The dimension index at which a wavelength completes `rotations` turns over the original context.
double CorrectionDim(double rotations, int64_t dim, double base, double original_max) {
  return dim * std::log(original_max / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}

}  // namespace

RopeTable RopeTable::FromConfig(const ModelConfig& c) {
  RopeTable t;
  t.rope_dim = c.qk_rope_head_dim;
  t.interleaved = c.rope_interleave;
  const int64_t d = t.rope_dim, half = d / 2;
  const float base = static_cast<float>(c.rope_theta);
  t.inv_freq.resize(half);
  std::vector<float> pos_freqs(half);
  for (int64_t i = 0; i < half; ++i) {
    pos_freqs[i] = std::pow(base, static_cast<float>(2 * i) / static_cast<float>(d));
    t.inv_freq[i] = 1.0f / pos_freqs[i];
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type != "yarn") return t;

  const double factor = s.factor;
  const double original = s.original_max_position_embeddings > 0
                              ? static_cast<double>(s.original_max_position_embeddings)
                              : static_cast<double>(c.max_position_embeddings);
  const double beta_fast = s.beta_fast != 0 ? s.beta_fast : 32.0;
  const double beta_slow = s.beta_slow != 0 ? s.beta_slow : 1.0;
  double low = CorrectionDim(beta_fast, d, c.rope_theta, original);
  double high = CorrectionDim(beta_slow, d, c.rope_theta, original);
  if (s.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(d - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = std::clamp(
        (static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f,
        1.0f);
    const float extrapolation = 1.0f - ramp;  // weight of the unscaled frequency
    const float interp = 1.0f / (static_cast<float>(factor) * pos_freqs[i]);
    t.inv_freq[i] = interp * (1.0f - extrapolation) + t.inv_freq[i] * extrapolation;
  }
  if (s.attention_factor) {
    t.attention_factor = static_cast<float>(*s.attention_factor);
  } else if (s.mscale && *s.mscale != 0 && s.mscale_all_dim && *s.mscale_all_dim != 0) {
    t.attention_factor =
        static_cast<float>(YarnMscale(factor, *s.mscale) / YarnMscale(factor, *s.mscale_all_dim));
  } else {
    t.attention_factor = static_cast<float>(YarnMscale(factor, 1.0));
  }
  return t;
}

}  // namespace dsv3
