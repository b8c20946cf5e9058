// SamplingParams: how one request turns logits into tokens and when it stops. Ranges follow
// vLLM's, so that clients moving between servers see the same rules.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dsv3 {

inline constexpr int32_t kMaxLogprobs = 20;
inline constexpr int32_t kMaxStopStrings = 16;

struct SamplingParams {
  // Logits are divided by temperature; below kGreedyTemperature (0 included) sampling is greedy.
  float temperature = 1.0f;
  float top_p = 1.0f;  // nucleus: keep the most likely tokens up to this much mass, (0, 1]
  int32_t top_k = -1;  // keep the k most likely tokens; -1 or 0: all
  float min_p = 0.0f;  // keep tokens with probability >= min_p * the top probability
  float repetition_penalty = 1.0f;  // tokens of the prompt or output: logit / p if > 0, else * p
  float presence_penalty = 0.0f;    // subtracted once from tokens present in the output
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the output
  // Seed of the request's own random generator; nullopt: a random seed.
  std::optional<uint64_t> seed;
  int32_t max_tokens = 16;  // output tokens, the stopping token included
  int32_t min_tokens = 0;   // no EOS, stop token or stop string before this many output tokens
  int32_t logprobs = 0;     // most likely alternatives returned per token, [0, kMaxLogprobs]
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;  // stop strings, matched on the detokenized output
  bool ignore_eos = false;

  // OK, or InvalidArgument whose message names the first invalid field and its value, e.g.
  // "temperature must be >= 0, got -1". Floats must be finite.
  absl::Status Validate() const;
};

inline constexpr float kGreedyTemperature = 1e-5f;

}  // namespace dsv3
