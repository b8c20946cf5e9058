// Shapes engine output into OpenAI's response objects: per choice, the engine's deltas go
// through the R1 reasoning parser and the V3 tool-call parser (as the gRPC Chat reactor does),
// log probabilities get their token text and bytes, and the pieces become stream chunks
// (chat.completion.chunk, text_completion) or, accumulated, the whole response. Pure logic.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/tokenizer/reasoning_parser.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tool_call_parser.h"
#include "nlohmann/json.hpp"
#include "server/openai_request.h"

namespace dsv3::server::openai {

struct ResponseMeta {
  std::string id;  // "chatcmpl-<request id>" / "cmpl-<request id>"
  int64_t created = 0;  // Unix seconds
  std::string model;
};

struct TokenInfo {
  int32_t id = 0;
  float logprob = 0;
  std::vector<TokenLogprob> top;  // most likely first, already cut to top_logprobs
};

struct NamedToolCall {
  std::string id;  // "call_<request id>_<choice>_<k>"
  ToolCall call;
};

// What one engine delta adds to a choice.
struct Piece {
  std::string text;       // completions: the text; chat: the answer's content
  std::string reasoning;  // chat, R1: the think section's text
  std::vector<NamedToolCall> tool_calls;
  std::vector<TokenInfo> tokens;  // when logprobs were requested
  size_t text_offset = 0;         // completions: where `text` starts in the choice's text
};

class ChoiceOutput {
 public:
  // `tokenizer` may be null (token-id completions): logprob entries then have no text.
  ChoiceOutput(const ParsedRequest& request, const Tokenizer* tokenizer, std::string request_id,
               int index);

  // The piece `delta` adds; a finished delta flushes the parsers and records the finish.
  Piece Push(const OutputDelta& delta);

  int index() const { return index_; }
  bool finished() const { return finish_ != FinishReason::kNone; }
  FinishReason finish() const { return finish_; }
  const std::string& error() const { return error_; }
  // "stop", "length" or "tool_calls" (a stop after the model called tools).
  std::string finish_reason() const;
  int32_t prompt_tokens() const { return prompt_tokens_; }
  int32_t completion_tokens() const { return completion_tokens_; }
  int32_t cached_tokens() const { return cached_tokens_; }
  // Everything so far, for the non-streamed response.
  const Piece& total() const { return total_; }

 private:
  const ParsedRequest& request_;
  const Tokenizer* tokenizer_;
  const std::string request_id_;
  const int index_;
  std::optional<ReasoningParser> reasoning_;
  std::optional<ToolCallParser> tools_;
  int calls_ = 0;
  bool echoed_ = false;
  Piece total_;
  FinishReason finish_ = FinishReason::kNone;
  std::string error_;
  int32_t prompt_tokens_ = 0, completion_tokens_ = 0, cached_tokens_ = 0;
};

// usage: prompt counted once, completions summed over the choices.
nlohmann::json UsageJson(const std::vector<ChoiceOutput>& choices);

// One stream chunk's choice entry. `first`: the choice's first chunk (chat: carries the role).
// `finish_reason`: set on the choice's last chunk.
nlohmann::json ChunkChoice(const ParsedRequest& request, const Tokenizer* tokenizer,
                           const ChoiceOutput& choice, const Piece& piece, bool first,
                           bool last);
// A whole chunk around `choices` (a list) and the optional usage (null when include_usage and
// not the last chunk; absent when usage was not asked for).
nlohmann::json Chunk(const ParsedRequest& request, const ResponseMeta& meta,
                     nlohmann::json choices, std::optional<nlohmann::json> usage);
// The non-streamed response.
nlohmann::json FullResponse(const ParsedRequest& request, const Tokenizer* tokenizer,
                            const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices);

// JSON text; ill-formed UTF-8 (a token's partial character) is replaced, never an exception.
std::string Dump(const nlohmann::json& j);

}  // namespace dsv3::server::openai
