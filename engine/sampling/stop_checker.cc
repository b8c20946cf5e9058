#include "engine/sampling/stop_checker.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace dsv3 {

StopChecker::StopChecker(const SamplingParams& params, std::vector<int32_t> eos_token_ids)
    : stop_token_ids_(params.stop_token_ids),
      eos_token_ids_(params.ignore_eos ? std::vector<int32_t>{} : std::move(eos_token_ids)),
      stop_strings_(params.stop),
      min_tokens_(params.min_tokens),
      max_tokens_(params.max_tokens) {}

StopUpdate StopChecker::Append(int32_t token, std::string_view text_delta) {
  assert(!finished_);
  ++num_output_tokens_;
  StopUpdate update;
  const bool may_stop = num_output_tokens_ > min_tokens_;
  const auto is = [token](const std::vector<int32_t>& ids) {
    return std::find(ids.begin(), ids.end(), token) != ids.end();
  };

  if (may_stop && (is(eos_token_ids_) || is(stop_token_ids_))) {
    update.reason = is(eos_token_ids_) ? StopReason::kEos : StopReason::kStopToken;
    update.stop_token = token;
    update.text = std::move(pending_);
    pending_.clear();
    finished_ = true;
    return update;
  }

  pending_.append(text_delta);
  if (may_stop) {
    size_t earliest = std::string::npos;
    for (const std::string& stop : stop_strings_) {
      const size_t at = pending_.find(stop);
      if (at < earliest) {
        earliest = at;
        update.stop_string = stop;
      }
    }
    if (earliest != std::string::npos) {
      update.reason = StopReason::kStopString;
      update.text = pending_.substr(0, earliest);
      pending_.clear();
      finished_ = true;
      return update;
    }
  }

  if (num_output_tokens_ >= max_tokens_) {
    update.reason = StopReason::kMaxTokens;
    update.text = std::move(pending_);
    pending_.clear();
    finished_ = true;
    return update;
  }

  const size_t release = pending_.size() - HoldBackLength();
  update.text = pending_.substr(0, release);
  pending_.erase(0, release);
  return update;
}

size_t StopChecker::HoldBackLength() const {
  size_t longest = 0;
  for (const std::string& stop : stop_strings_) {
    const size_t max_len = std::min(stop.size() - 1, pending_.size());
    for (size_t len = max_len; len > longest; --len) {
      if (pending_.compare(pending_.size() - len, len, stop, 0, len) == 0) {
        longest = len;
        break;
      }
    }
  }
  return longest;
}

}  // namespace dsv3
