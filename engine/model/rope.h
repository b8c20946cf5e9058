// Rotary frequencies for DeepSeek-V3 (SPEC section 3): plain RoPE or YaRN, computed in float32
// the way transformers' _compute_yarn_parameters does, so positions rotate identically.
#pragma once

#include <vector>

#include "engine/backend/backend.h"
#include "engine/config/model_config.h"

namespace dsv3 {

struct RopeTable {
  std::vector<float> inv_freq;  // [rope_dim / 2]
  float attention_factor = 1.0f;
  int64_t rope_dim = 0;
  bool interleaved = true;

  static RopeTable FromConfig(const ModelConfig& config);
  RopeParams params() const { return {inv_freq.data(), rope_dim, attention_factor, interleaved}; }
};

}  // namespace dsv3
