// StopChecker: decides, token by token, whether a sequence has finished and how much of its
// output text may be sent to the client now.
//
// Stop strings are matched on the detokenized output, which arrives in deltas that may split a
// stop string anywhere. Text that could still be the start of a stop string is held back until
// the following text rules that out; a matched stop string and everything after it are never
// released. Works on the strings it is given: detokenization (and holding back incomplete UTF-8)
// is the tokenizer's job.
//
// Conditions, checked in this order after each token:
//   1. the token is EOS (unless ignore_eos) or one of stop_token_ids: finished, the token's text
//      is dropped and held-back text released;
//   2. a stop string occurs in the not yet released text: finished, the text before the earliest
//      match is released;
//   3. max_tokens output tokens: finished, everything held back is released.
// Conditions 1 and 2 apply only to tokens after the first min_tokens.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampling/sampling_params.h"

namespace dsv3 {

enum class StopReason {
  kNone,        // not finished
  kEos,         // an EOS token of the model
  kStopToken,   // one of params.stop_token_ids
  kStopString,  // one of params.stop
  kMaxTokens,   // params.max_tokens reached
};

struct StopUpdate {
  std::string text;  // output text to send now (possibly empty)
  StopReason reason = StopReason::kNone;
  int32_t stop_token = -1;  // kEos or kStopToken: the token
  std::string stop_string;  // kStopString: the stop string that matched

  bool finished() const { return reason != StopReason::kNone; }
};

class StopChecker {
 public:
  // Copies what it needs from `params` (validated); eos_token_ids are the model's.
  StopChecker(const SamplingParams& params, std::vector<int32_t> eos_token_ids);

  // Feeds the next output token and the text it added to the output. Must not be called once an
  // update has reported finished().
  StopUpdate Append(int32_t token, std::string_view text_delta);

  int32_t num_output_tokens() const { return num_output_tokens_; }
  bool finished() const { return finished_; }

 private:
  // Length of the longest suffix of pending_ that is a proper prefix of a stop string.
  size_t HoldBackLength() const;

  std::vector<int32_t> stop_token_ids_;  // EOS (unless ignore_eos) and params.stop_token_ids
  std::vector<int32_t> eos_token_ids_;
  std::vector<std::string> stop_strings_;
  int32_t min_tokens_;
  int32_t max_tokens_;
  int32_t num_output_tokens_ = 0;
  bool finished_ = false;
  std::string pending_;  // text received but not released; shorter than the longest stop string
                         // between calls
};

}  // namespace dsv3
