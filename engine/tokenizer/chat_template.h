// Chat prompts of DeepSeek-V3 and DeepSeek-R1, rendered exactly as their Hugging Face
// chat_template (Jinja) renders them, quirks included, for the message shapes those templates
// know: system, user, assistant (text, or tool calls with null content) and tool outputs.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

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

// A rendered prompt as the template's own text and the messages' text, in order. Encoding it
// with Tokenizer::Encode(Pieces()) keeps special-token text that a message contains literal
// (plain bytes, never a control token), so a user cannot forge a turn; the markers the template
// writes stay tokens. Joined, the pieces are the template's output.
struct ChatPrompt {
  struct Piece {
    std::string text;
    bool from_message = false;  // content, tool call name/type/arguments: the client's text
  };
  std::vector<Piece> pieces;

  std::string Text() const;
  // Views into `pieces` for the tokenizer: message text literal when `literal_messages`.
  std::vector<TextPiece> Pieces(bool literal_messages) const;
};

// The prompt for `messages`, starting with `bos_token`. Fails (InvalidArgument) on a role the
// template does not know and on null content where the template would concatenate it.
absl::StatusOr<ChatPrompt> RenderChatPrompt(ChatTemplate chat_template,
                                            std::span<const ChatMessage> messages,
                                            bool add_generation_prompt,
                                            std::string_view bos_token);

// RenderChatPrompt's text: what the Hugging Face template renders.
absl::StatusOr<std::string> RenderChat(ChatTemplate chat_template,
                                       std::span<const ChatMessage> messages,
                                       bool add_generation_prompt, std::string_view bos_token);

}  // namespace dsv3
