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

// Builds a ChatPrompt: Template() appends the template's own text, Message() the client's.
class PromptWriter {
 public:
  template <typename... Parts>
  void Template(const Parts&... parts) {
    (Add(std::string_view(parts), false), ...);
  }
  void Message(std::string_view text) { Add(text, true); }
  ChatPrompt Take() { return std::move(prompt_); }

 private:
  void Add(std::string_view text, bool from_message) {
    if (text.empty()) return;
    auto& pieces = prompt_.pieces;
    if (pieces.empty() || pieces.back().from_message != from_message) {
      pieces.push_back({std::string(), from_message});
    }
    pieces.back().text.append(text);
  }
  ChatPrompt prompt_;
};

void AppendCall(const ToolCall& call, PromptWriter& out) {
  out.Template(kCallBegin);
  out.Message(call.type);
  out.Template(kSep);
  out.Message(call.name);
  out.Template("\n```json\n");
  out.Message(call.arguments);
  out.Template("\n```", kCallEnd);
}

// R1's template shows earlier answers without their reasoning: whatever precedes the last
// "</think>" is dropped.
std::string_view WithoutReasoning(std::string_view content) {
  const size_t end = content.rfind("</think>");
  return end == std::string_view::npos ? content : content.substr(end + 8);
}

}  // namespace

absl::StatusOr<ChatPrompt> RenderChatPrompt(ChatTemplate chat_template,
                                            std::span<const ChatMessage> messages,
                                            bool add_generation_prompt,
                                            std::string_view bos_token) {
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
  PromptWriter out;
  out.Template(bos_token);
  bool first_system = true;
  for (const ChatMessage& m : messages) {
    if (m.role != "system") continue;
    if (!first_system) out.Template("\n\n");
    out.Message(m.content);
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
      out.Template(kUser);
      out.Message(m.content);
    } else if (m.role == "assistant" && m.content_is_null) {
      in_tool = false;
      for (const ToolCall& call : m.tool_calls) {
        if (!called_before) {
          // The first call of the conversation opens the block but does not close it...
          out.Template(kAssistant, kCallsBegin);
          AppendCall(call, out);
          called_before = true;
        } else {
          // ...and every later call, in this turn or a later one, closes it again.
          out.Template("\n");
          AppendCall(call, out);
          out.Template(kCallsEnd, kEos);
        }
      }
    } else if (m.role == "assistant") {
      // Tool calls beside non-null content are not rendered.
      if (in_tool) {
        out.Template(kOutputsEnd);
        out.Message(m.content);
        out.Template(kEos);
        in_tool = false;
      } else {
        const std::string_view content =
            chat_template == ChatTemplate::kR1 ? WithoutReasoning(m.content) : m.content;
        out.Template(kAssistant);
        out.Message(content);
        out.Template(kEos);
      }
    } else if (m.role == "tool") {
      in_tool = true;
      if (!outputs_before) {
        out.Template(kOutputsBegin, kOutputBegin);
        out.Message(m.content);
        out.Template(kOutputEnd);
        outputs_before = true;
      } else {
        out.Template("\n", kOutputBegin);
        out.Message(m.content);
        out.Template(kOutputEnd);
      }
    }
  }
  if (in_tool) out.Template(kOutputsEnd);
  if (add_generation_prompt && !in_tool) {
    out.Template(kAssistant);
    if (chat_template == ChatTemplate::kR1) out.Template("<think>\n");
  }
  return out.Take();
}

absl::StatusOr<std::string> RenderChat(ChatTemplate chat_template,
                                       std::span<const ChatMessage> messages,
                                       bool add_generation_prompt, std::string_view bos_token) {
  absl::StatusOr<ChatPrompt> prompt =
      RenderChatPrompt(chat_template, messages, add_generation_prompt, bos_token);
  if (!prompt.ok()) return prompt.status();
  return prompt->Text();
}

std::string ChatPrompt::Text() const {
  std::string text;
  for (const Piece& p : pieces) text.append(p.text);
  return text;
}

std::vector<TextPiece> ChatPrompt::Pieces(bool literal_messages) const {
  std::vector<TextPiece> out;
  out.reserve(pieces.size());
  for (const Piece& p : pieces) out.push_back({p.text, literal_messages && p.from_message});
  return out;
}

}  // namespace dsv3
