#include "engine/tokenizer/tool_call_parser.h"

#include <optional>

#include "engine/tokenizer/stream_markers.h"

namespace dsv3 {
namespace {

constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kSep = "<｜tool▁sep｜>";

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Parses "TYPE<｜tool▁sep｜>NAME\n```json\nARGS\n```"; the fence is optional (the arguments are
// then the rest of the body).
std::optional<ToolCall> ParseCall(std::string_view body) {
  const size_t sep = body.find(kSep);
  if (sep == std::string_view::npos) return std::nullopt;
  ToolCall call;
  call.type = std::string(Trim(body.substr(0, sep)));
  std::string_view rest = body.substr(sep + kSep.size());
  const size_t newline = rest.find('\n');
  call.name = std::string(Trim(rest.substr(0, newline)));
  if (call.name.empty()) return std::nullopt;
  std::string_view args = newline == std::string_view::npos ? "" : rest.substr(newline + 1);
  if (args.starts_with("```")) {
    const size_t fence_end = args.find('\n');  // "```json\n"
    args = fence_end == std::string_view::npos ? "" : args.substr(fence_end + 1);
    const size_t close = args.rfind("```");
    if (close != std::string_view::npos) args = args.substr(0, close);
  }
  call.arguments = std::string(Trim(args));
  return call;
}

}  // namespace

ToolCallParser::Delta ToolCallParser::Push(std::string_view text) {
  held_.append(text);
  Delta delta;
  while (true) {
    switch (state_) {
      case State::kContent: {
        // A call may also start without the block marker; the earlier marker wins.
        const size_t block = held_.find(kCallsBegin);
        const size_t call = held_.find(kCallBegin);
        if (block != std::string::npos || call != std::string::npos) {
          const bool is_block =
              call == std::string::npos || (block != std::string::npos && block < call);
          const size_t at = is_block ? block : call;
          delta.content.append(held_, 0, at);
          held_.erase(0, at + (is_block ? kCallsBegin : kCallBegin).size());
          state_ = is_block ? State::kBetweenCalls : State::kInCall;
          continue;
        }
        const size_t keep = tokenizer::PartialMarkerSuffix(held_, {kCallsBegin, kCallBegin});
        delta.content.append(held_, 0, held_.size() - keep);
        held_.erase(0, held_.size() - keep);
        return delta;
      }
      case State::kBetweenCalls: {
        size_t start = 0;
        while (start < held_.size() && IsSpace(held_[start])) ++start;
        const std::string_view rest = std::string_view(held_).substr(start);
        if (rest.starts_with(kCallBegin)) {
          held_.erase(0, start + kCallBegin.size());
          state_ = State::kInCall;
          continue;
        }
        if (rest.starts_with(kCallsEnd)) {
          held_.erase(0, start + kCallsEnd.size());
          state_ = State::kContent;
          continue;
        }
        if (kCallBegin.starts_with(rest) || kCallsEnd.starts_with(rest)) return delta;
        // Other text: the block ended without its end marker; the text is content.
        state_ = State::kContent;
        continue;
      }
      case State::kInCall: {
        const size_t end = held_.find(kCallEnd);
        if (end == std::string::npos) return delta;
        const std::string_view body = std::string_view(held_).substr(0, end);
        if (std::optional<ToolCall> call = ParseCall(body)) {
          delta.tool_calls.push_back(*std::move(call));
        } else {
          // Not a call after all: keep what the model wrote, visible.
          delta.content.append(kCallBegin);
          delta.content.append(body);
          delta.content.append(kCallEnd);
        }
        held_.erase(0, end + kCallEnd.size());
        state_ = State::kBetweenCalls;
        continue;
      }
    }
  }
}

ToolCallParser::Delta ToolCallParser::Flush() {
  Delta delta;
  if (state_ == State::kInCall) {
    delta.content.append(kCallBegin);
    delta.content.append(held_);
  } else if (state_ == State::kContent || !Trim(held_).empty()) {
    delta.content.append(held_);
  }
  held_.clear();
  state_ = State::kContent;
  return delta;
}

}  // namespace dsv3
