// Turns API requests into engine requests, checking everything a client can get wrong. Every
// failure is InvalidArgument naming the field and the value (FailedPrecondition when the request
// needs a tokenizer and the server has none), so that clients can fix the request from the
// message alone. Pure logic: no gRPC calls, no engine.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dsv3/v1/inference.pb.h"
#include "engine/engine.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"

namespace dsv3::server {

// What requests are checked against, and what fills the fields they leave unset.
struct ModelLimits {
  int64_t vocab_size = 0;   // token ids must be in [0, vocab_size)
  int64_t max_context = 0;  // prompt + max_tokens must not exceed it
  // Text to tokenize (a text prompt, Tokenize's text, a chat's message text in all) larger than
  // this gets InvalidArgument naming --max-tokenize-bytes.
  int64_t max_tokenize_bytes = int64_t{1} << 20;
  // Special-token text in chat messages becomes control tokens (--allow-special-tokens-in-
  // messages, for trusted clients); by default it is encoded as the literal text it is.
  bool special_tokens_in_messages = false;

  // Unset fields. The server fills these from the checkpoint and its flags; the plain values
  // are the engine's own defaults (vLLM's).
  ChatTemplate chat_template = ChatTemplate::kV3;  // a chat request's unspecified template
  SamplingParams sampling{};                       // generation_config.json's sampling values
  // Unset max_tokens: true, the context left after the prompt, at most max_tokens_cap (0: no
  // cap), as users of other servers expect; false, sampling.max_tokens.
  bool max_tokens_fill_context = false;
  int32_t max_tokens_cap = 0;
};

// InvalidArgument when `bytes` of text to tokenize exceed limits.max_tokenize_bytes.
absl::Status CheckTokenizeSize(size_t bytes, const ModelLimits& limits, absl::string_view field);

inline constexpr size_t kMaxRequestIdBytes = 128;
inline constexpr size_t kMaxChatMessages = 1024;
inline constexpr int kMaxChoices = 16;  // n

// OK when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF); else InvalidArgument "<field> is not valid UTF-8 (at byte N)".
absl::Status CheckUtf8(absl::string_view text, absl::string_view field);

// The engine's sampling parameters, defaults filled in, validated. `have_tokenizer`: stop
// strings need one (they are matched on text).
absl::StatusOr<SamplingParams> ToSamplingParams(const v1::SamplingParameters& params,
                                                const ModelLimits& limits, bool have_tokenizer);

// Sets sampling.max_tokens for a request that left it unset (`max_tokens_set` false) and
// limits.max_tokens_fill_context: the context left after `prompt_tokens`, at most the cap.
// InvalidArgument when the prompt leaves no room or less than min_tokens.
absl::Status FillDefaultMaxTokens(SamplingParams& sampling, bool max_tokens_set,
                                  size_t prompt_tokens, const ModelLimits& limits);

// Token ids inside the vocabulary, the prompt not empty, prompt + max_tokens within the context.
absl::Status CheckPrompt(std::span<const int32_t> ids, const SamplingParams& sampling,
                         const ModelLimits& limits, absl::string_view field);

struct GenerateCall {
  EngineRequest request;
  int n = 1;  // choices
  bool return_token_ids = true;
  bool return_text = false;
};

// `tokenizer` may be null: token-id prompts still work, text prompts get FailedPrecondition.
absl::StatusOr<GenerateCall> BuildGenerateCall(const v1::GenerateRequest& request,
                                               const ModelLimits& limits,
                                               const Tokenizer* tokenizer);

struct ChatCall {
  EngineRequest request;
  int n = 1;  // choices
  ChatTemplate chat_template = ChatTemplate::kV3;
  bool prompt_opened_think = false;  // R1: the prompt ends inside "<think>"
  bool return_token_ids = false;
};

// Renders the messages with the template and encodes them; needs a tokenizer.
absl::StatusOr<ChatCall> BuildChatCall(const v1::ChatRequest& request, const ModelLimits& limits,
                                       const Tokenizer* tokenizer);

// The number of choices of a request's n: 0 means 1; InvalidArgument beyond [0, kMaxChoices].
absl::StatusOr<int> CheckChoices(int32_t n);

// A request id from the client's (checked: UTF-8, at most kMaxRequestIdBytes, no control
// characters: it goes into log lines), or "" if unset.
absl::StatusOr<std::string> ClientRequestId(absl::string_view id);

}  // namespace dsv3::server
