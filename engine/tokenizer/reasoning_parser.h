// Splits DeepSeek-R1 output, as it streams, into reasoning (inside <think>...</think>) and the
// answer that follows.
#pragma once

#include <string>
#include <string_view>

namespace dsv3 {

class ReasoningParser {
 public:
  struct Delta {
    std::string reasoning;
    std::string content;
  };

  // `prompt_opened_think`: the prompt ends inside "<think>" (R1's generation prompt), so the
  // output starts as reasoning without an opening tag and "</think>" alone ends it. Otherwise the
  // output is reasoning only when it starts with "<think>"; else all of it is content.
  // Either way a "<think>" at the very start of the output is consumed, not shown.
  explicit ReasoningParser(bool prompt_opened_think)
      : state_(State::kStart), reasoning_by_default_(prompt_opened_think) {}

  // Text may arrive in any pieces, tags split anywhere; bytes that might be the start of a tag
  // are held back until the next Push or Flush decides.
  Delta Push(std::string_view text);
  // The held-back rest, in the current section. Call at the end of the output.
  Delta Flush();

 private:
  enum class State { kStart, kReasoning, kContent };

  State state_;
  bool reasoning_by_default_;
  std::string held_;
};

}  // namespace dsv3
