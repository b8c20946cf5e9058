// Chat prompts of DeepSeek-V3 and DeepSeek-R1, rendered exactly as their Hugging Face
// chat_template (Jinja) renders them, quirks included, for the message shapes those templates
// know: system, user, assistant (text, or tool calls with null content) and tool outputs.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3 {

enum class ChatTemplate {
  kV3,  // DeepSeek-V3's tokenizer_config.json chat_template
  kR1,  // DeepSeek-R1's: earlier turns lose their reasoning, the prompt opens "<think>\n"
};

struct ToolCall {
  std::string type;  // "function"
  std::string name;
  std::string arguments;  // JSON text, rendered as given
};

struct ChatMessage {
  std::string role;  // system, user, assistant or tool
  std::string content;
  // The template tells an assistant turn that only calls tools by content being null.
  bool content_is_null = false;
  std::vector<ToolCall> tool_calls;
};

// The prompt text for `messages`, starting with `bos_token`. Fails (InvalidArgument) on a role
// the template does not know and on null content where the template would concatenate it.
absl::StatusOr<std::string> RenderChat(ChatTemplate chat_template,
                                       std::span<const ChatMessage> messages,
                                       bool add_generation_prompt, std::string_view bos_token);

}  // namespace dsv3
