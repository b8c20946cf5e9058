#include "engine/tokenizer/reasoning_parser.h"

#include "engine/tokenizer/stream_markers.h"

namespace dsv3 {
namespace {

constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";

}  // namespace

ReasoningParser::Delta ReasoningParser::Push(std::string_view text) {
  held_.append(text);
  Delta delta;
  while (true) {
    switch (state_) {
      case State::kStart:
        if (held_.starts_with(kOpen)) {
          held_.erase(0, kOpen.size());
          state_ = State::kReasoning;
          continue;
        }
        if (std::string_view(kOpen).starts_with(held_)) return delta;  // may still become it
        state_ = reasoning_by_default_ ? State::kReasoning : State::kContent;
        continue;
      case State::kReasoning: {
        const size_t close = held_.find(kClose);
        if (close != std::string::npos) {
          delta.reasoning.append(held_, 0, close);
          held_.erase(0, close + kClose.size());
          state_ = State::kContent;
          continue;
        }
        const size_t keep = tokenizer::PartialMarkerSuffix(held_, {kClose});
        delta.reasoning.append(held_, 0, held_.size() - keep);
        held_.erase(0, held_.size() - keep);
        return delta;
      }
      case State::kContent:
        delta.content.append(held_);
        held_.clear();
        return delta;
    }
  }
}

ReasoningParser::Delta ReasoningParser::Flush() {
  Delta delta;
  const bool reasoning =
      state_ == State::kReasoning || (state_ == State::kStart && reasoning_by_default_);
  (reasoning ? delta.reasoning : delta.content).append(held_);
  held_.clear();
  return delta;
}

}  // namespace dsv3
