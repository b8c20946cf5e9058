// Parses OpenAI-compatible request bodies (/v1/chat/completions, /v1/completions) into the engine
// request the gRPC side would build: the JSON is mapped onto the gRPC request messages and goes
// through the same validation (server/validation.h), so limits, ranges and messages are shared.
// Every error is an absl::Status naming the request field (openai_error.h's ParamOf); a field
// this server does not implement is refused by name, never ignored. Pure logic: no HTTP, no
// engine.
//
// Accepted and ignored, as they change nothing about the output: user, metadata, store,
// service_tier, parallel_tool_calls, and on messages name, tool_call_id and reasoning_content
// (R1's template drops earlier reasoning anyway).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/validation.h"

namespace dsv3::server::openai {

enum class Endpoint { kChat, kCompletions };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;      // the served name the request named (or the first one)
  EngineRequest request;  // choice 0's; choice i runs with seed + i when a seed is given
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;       // per-token log probabilities in the response
  int top_logprobs = 0;        // alternatives per token (completions: the logprobs number)
  std::string echo_prefix;     // completions with echo: the prompt's text, put before each text
  // Chat: how the output is split. R1 output goes through the reasoning parser first; V3
  // output through the tool-call parser.
  ChatTemplate chat_template = ChatTemplate::kV3;
  bool prompt_opened_think = false;
};

// The request of `body` for `endpoint`. `served_names` are the names "model" may take.
// `tokenizer` null: chat fails (FailedPrecondition), completions need token-id prompts.
absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, std::string_view body,
                                           const ModelLimits& limits, const Tokenizer* tokenizer,
                                           std::span<const std::string> served_names);

}  // namespace dsv3::server::openai
