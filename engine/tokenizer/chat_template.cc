#include "engine/tokenizer/chat_template.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dsv3 {
namespace {

constexpr std::string_view kUser = "<｜User｜>";
constexpr std::string_view kAssistant = "<｜Assistant｜>";
constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kSep = "<｜tool▁sep｜>";
constexpr std::string_view kOutputsBegin = "<｜tool▁outputs▁begin｜>";
constexpr std::string_view kOutputsEnd = "<｜tool▁outputs▁end｜>";
constexpr std::string_view kOutputBegin = "<｜tool▁output▁begin｜>";
constexpr std::string_view kOutputEnd = "<｜tool▁output▁end｜>";

// absl::StrAppend of this Abseil takes no std::string_view.
template <typename... Parts>
void Append(std::string& out, const Parts&... parts) {
  (out.append(std::string_view(parts)), ...);
}

void AppendCall(const ToolCall& call, std::string& out) {
  Append(out, kCallBegin, call.type, kSep, call.name, "\n```json\n", call.arguments, "\n```",
         kCallEnd);
}

// R1's template shows earlier answers without their reasoning: whatever precedes the last
// "</think>" is dropped.
std::string_view WithoutReasoning(std::string_view content) {
  const size_t end = content.rfind("</think>");
  return end == std::string_view::npos ? content : content.substr(end + 8);
}

}  // namespace

absl::StatusOr<std::string> RenderChat(ChatTemplate chat_template,
                                       std::span<const ChatMessage> messages,
                                       bool add_generation_prompt, std::string_view bos_token) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
      return absl::InvalidArgumentError(
          absl::StrCat("message ", i, ": unknown role \"", m.role, "\""));
    }
    if (m.content_is_null && m.role != "assistant") {
      return absl::InvalidArgumentError(
          absl::StrCat("message ", i, " (", m.role, "): content must not be null"));
    }
  }

  // All system messages, joined by a blank line, come first, wherever they stand.
  std::string out(bos_token);
  bool first_system = true;
  for (const ChatMessage& m : messages) {
    if (m.role != "system") continue;
    if (!first_system) out.append("\n\n");
    out.append(m.content);
    first_system = false;
  }

  // The template's namespace: `called_before` is its is_first (set by the first tool call of the
  // whole conversation, not of the turn), `outputs_before` the negation of is_output_first
  // (likewise conversation-wide), `in_tool` its is_tool.
  bool called_before = false;
  bool outputs_before = false;
  bool in_tool = false;
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      in_tool = false;
      Append(out, kUser, m.content);
    } else if (m.role == "assistant" && m.content_is_null) {
      in_tool = false;
      for (const ToolCall& call : m.tool_calls) {
        if (!called_before) {
          // The first call of the conversation opens the block but does not close it...
          Append(out, kAssistant, kCallsBegin);
          AppendCall(call, out);
          called_before = true;
        } else {
          // ...and every later call, in this turn or a later one, closes it again.
          out.append("\n");
          AppendCall(call, out);
          Append(out, kCallsEnd, kEos);
        }
      }
    } else if (m.role == "assistant") {
      // Tool calls beside non-null content are not rendered.
      if (in_tool) {
        Append(out, kOutputsEnd, m.content, kEos);
        in_tool = false;
      } else {
        const std::string_view content =
            chat_template == ChatTemplate::kR1 ? WithoutReasoning(m.content) : m.content;
        Append(out, kAssistant, content, kEos);
      }
    } else if (m.role == "tool") {
      in_tool = true;
      if (!outputs_before) {
        Append(out, kOutputsBegin, kOutputBegin, m.content, kOutputEnd);
        outputs_before = true;
      } else {
        Append(out, "\n", kOutputBegin, m.content, kOutputEnd);
      }
    }
  }
  if (in_tool) out.append(kOutputsEnd);
  if (add_generation_prompt && !in_tool) {
    out.append(kAssistant);
    if (chat_template == ChatTemplate::kR1) out.append("<think>\n");
  }
  return out;
}

}  // namespace dsv3
