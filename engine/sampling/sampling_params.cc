#include "engine/sampling/sampling_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dsv3 {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view rule, auto value) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", rule, ", got ", value));
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  // Written as !(ok) so that NaN fails every check.
  if (!(std::isfinite(temperature) && temperature >= 0)) {
    return Invalid("temperature", ">= 0", temperature);
  }
  if (!(top_p > 0 && top_p <= 1)) return Invalid("top_p", "in (0, 1]", top_p);
  if (top_k < -1) return Invalid("top_k", "-1, 0 (disabled) or >= 1", top_k);
  if (!(min_p >= 0 && min_p <= 1)) return Invalid("min_p", "in [0, 1]", min_p);
  if (!(std::isfinite(repetition_penalty) && repetition_penalty > 0)) {
    return Invalid("repetition_penalty", "> 0", repetition_penalty);
  }
  if (!(presence_penalty >= -2 && presence_penalty <= 2)) {
    return Invalid("presence_penalty", "in [-2, 2]", presence_penalty);
  }
  if (!(frequency_penalty >= -2 && frequency_penalty <= 2)) {
    return Invalid("frequency_penalty", "in [-2, 2]", frequency_penalty);
  }
  if (max_tokens < 1) return Invalid("max_tokens", ">= 1", max_tokens);
  if (min_tokens < 0) return Invalid("min_tokens", ">= 0", min_tokens);
  if (min_tokens > max_tokens) {
    return Invalid("min_tokens", absl::StrCat("<= max_tokens (", max_tokens, ")"), min_tokens);
  }
  if (logprobs < 0 || logprobs > kMaxLogprobs) {
    return Invalid("logprobs", absl::StrCat("in [0, ", kMaxLogprobs, "]"), logprobs);
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0) {
      return Invalid(absl::StrCat("stop_token_ids[", i, "]"), ">= 0", stop_token_ids[i]);
    }
  }
  if (stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return Invalid("stop", absl::StrCat("at most ", kMaxStopStrings, " strings"), stop.size());
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] must not be empty"));
    }
  }
  return absl::OkStatus();
}

}  // namespace dsv3
