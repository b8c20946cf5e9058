#include "server/validation.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dsv3::server {
namespace {

absl::Status Invalid(auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); }

absl::Status NeedsTokenizer(absl::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what,
                   " needs a tokenizer, and this server has none (its model directory "
                   "holds no tokenizer.json); send token ids instead"));
}

absl::Status CheckTokenId(int32_t id, const ModelLimits& limits, absl::string_view field,
                          size_t index) {
  if (id < 0 || id >= limits.vocab_size) {
    return Invalid(field, "[", index, "] = ", id, " is outside the vocabulary [0, ",
                   limits.vocab_size, ")");
  }
  return absl::OkStatus();
}

absl::StatusOr<ChatTemplate> ToChatTemplate(v1::ChatTemplate t, ChatTemplate unspecified) {
  switch (t) {
    case v1::CHAT_TEMPLATE_UNSPECIFIED:
      return unspecified;
    case v1::CHAT_TEMPLATE_V3:
      return ChatTemplate::kV3;
    case v1::CHAT_TEMPLATE_R1:
      return ChatTemplate::kR1;
    default:
      return Invalid("template ", static_cast<int>(t), " is not a known chat template");
  }
}

}  // namespace

absl::Status CheckUtf8(absl::string_view text, absl::string_view field) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    int len;
    uint32_t min;  // smallest code point of this length: anything below is an overlong form
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, min = 0x80, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, min = 0x800, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, min = 0x10000, cp = c & 0x07;
    } else {
      return Invalid(field, " is not valid UTF-8 (at byte ", i, ")");
    }
    if (i + len > n) return Invalid(field, " is not valid UTF-8 (truncated at byte ", i, ")");
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return Invalid(field, " is not valid UTF-8 (at byte ", i, ")");
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return Invalid(field, " is not valid UTF-8 (at byte ", i, ")");
    }
    i += len;
  }
  return absl::OkStatus();
}

absl::StatusOr<SamplingParams> ToSamplingParams(const v1::SamplingParameters& p,
                                                const ModelLimits& limits, bool have_tokenizer) {
  SamplingParams s = limits.sampling;
  // Checked with the room the prompt will leave once known (FillDefaultMaxTokens).
  if (!p.has_max_tokens() && limits.max_tokens_fill_context) {
    s.max_tokens = std::max<int32_t>(1, p.min_tokens());
  }
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_min_p()) s.min_p = p.min_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_presence_penalty()) s.presence_penalty = p.presence_penalty();
  if (p.has_frequency_penalty()) s.frequency_penalty = p.frequency_penalty();
  if (p.has_seed()) s.seed = p.seed();
  if (p.has_max_tokens()) s.max_tokens = p.max_tokens();
  if (p.has_min_tokens()) s.min_tokens = p.min_tokens();
  s.ignore_eos = p.ignore_eos();
  s.logprobs = p.logprobs();
  for (int i = 0; i < p.stop_size(); ++i) {
    // Checked before copying so that a huge list fails fast.
    if (i >= kMaxStopStrings) {
      return Invalid("sampling.stop has ", p.stop_size(), " strings; at most ", kMaxStopStrings,
                     " are allowed");
    }
    const std::string field = absl::StrCat("sampling.stop[", i, "]");
    if (absl::Status st = CheckUtf8(p.stop(i), field); !st.ok()) return st;
    s.stop.push_back(p.stop(i));
  }
  if (!s.stop.empty() && !have_tokenizer) return NeedsTokenizer("sampling.stop (stop strings)");
  for (int i = 0; i < p.stop_token_ids_size(); ++i) {
    if (absl::Status st = CheckTokenId(p.stop_token_ids(i), limits, "sampling.stop_token_ids", i);
        !st.ok()) {
      return st;
    }
    s.stop_token_ids.push_back(p.stop_token_ids(i));
  }
  if (absl::Status st = s.Validate(); !st.ok()) {
    return Invalid("sampling.", st.message());
  }
  return s;
}

absl::Status FillDefaultMaxTokens(SamplingParams& sampling, bool max_tokens_set,
                                  size_t prompt_tokens, const ModelLimits& limits) {
  if (max_tokens_set || !limits.max_tokens_fill_context) return absl::OkStatus();
  int64_t room = limits.max_context - static_cast<int64_t>(prompt_tokens);
  if (limits.max_tokens_cap > 0) room = std::min<int64_t>(room, limits.max_tokens_cap);
  if (room < 1) {
    return Invalid("prompt (", prompt_tokens, " tokens) leaves no room for output in the context ",
                   "limit of ", limits.max_context, " tokens (--max-model-len)");
  }
  if (room < sampling.min_tokens) {
    return Invalid("sampling.min_tokens (", sampling.min_tokens, ") is more than the ", room,
                   " tokens the prompt leaves in the context");
  }
  sampling.max_tokens = static_cast<int32_t>(room);
  return absl::OkStatus();
}

absl::Status CheckPrompt(std::span<const int32_t> ids, const SamplingParams& sampling,
                         const ModelLimits& limits, absl::string_view field) {
  if (ids.empty()) return Invalid(field, " is empty");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (absl::Status st = CheckTokenId(ids[i], limits, field, i); !st.ok()) return st;
  }
  const int64_t total = static_cast<int64_t>(ids.size()) + sampling.max_tokens;
  if (total > limits.max_context) {
    return Invalid("prompt (", ids.size(), " tokens) + sampling.max_tokens (", sampling.max_tokens,
                   ") = ", total, " exceeds the context limit of ", limits.max_context,
                   " tokens (--max-model-len)");
  }
  return absl::OkStatus();
}

absl::StatusOr<int> CheckChoices(int32_t n) {
  if (n < 0 || n > kMaxChoices) {
    return Invalid("n must be in [1, ", kMaxChoices, "] (0: 1; a fixed limit of this server), got ",
                   n);
  }
  return std::max(n, 1);
}

absl::StatusOr<std::string> ClientRequestId(absl::string_view id) {
  if (id.size() > kMaxRequestIdBytes) {
    return Invalid("request_id is ", id.size(), " bytes; at most ", kMaxRequestIdBytes,
                   " are allowed");
  }
  if (absl::Status st = CheckUtf8(id, "request_id"); !st.ok()) return st;
  // The id is written into every log line of the request: a newline or an escape sequence in it
  // would forge log lines or recolour the terminal. C0 controls, DEL and C1 controls (U+0080 to
  // U+009F, UTF-8 C2 80 to C2 9F) are refused; the message gives the byte, never echoes it.
  for (size_t i = 0; i < id.size(); ++i) {
    const auto byte = static_cast<unsigned char>(id[i]);
    const bool c1 = byte == 0xC2 && i + 1 < id.size() &&
                    static_cast<unsigned char>(id[i + 1]) <= 0x9F;
    if (byte < 0x20 || byte == 0x7F || c1) {
      const unsigned code = c1 ? static_cast<unsigned char>(id[i + 1]) : byte;
      return Invalid("request_id has the control character ", absl::StrFormat("U+%04X", code),
                     " at byte ", i, "; only printable characters are allowed");
    }
  }
  return std::string(id);
}

absl::Status CheckTokenizeSize(size_t bytes, const ModelLimits& limits, absl::string_view field) {
  if (static_cast<int64_t>(bytes) <= limits.max_tokenize_bytes) return absl::OkStatus();
  return Invalid(field, " is ", bytes, " bytes; this server tokenizes at most ",
                 limits.max_tokenize_bytes, " (--max-tokenize-bytes)");
}

absl::StatusOr<GenerateCall> BuildGenerateCall(const v1::GenerateRequest& request,
                                               const ModelLimits& limits,
                                               const Tokenizer* tokenizer) {
  GenerateCall call;
  call.return_token_ids = request.has_return_token_ids() ? request.return_token_ids() : true;
  call.return_text = request.has_return_text() ? request.return_text() : tokenizer != nullptr;
  if (call.return_text && tokenizer == nullptr) return NeedsTokenizer("return_text");
  if (!call.return_token_ids && !call.return_text) {
    return Invalid("return_token_ids and return_text are both false: the response would be empty");
  }

  auto n = CheckChoices(request.n());
  if (!n.ok()) return n.status();
  call.n = *n;
  auto sampling = ToSamplingParams(request.sampling(), limits, tokenizer != nullptr);
  if (!sampling.ok()) return sampling.status();
  EngineRequest& er = call.request;
  er.sampling = *std::move(sampling);
  er.detokenize = call.return_text;
  er.skip_special_tokens = request.has_skip_special_tokens() ? request.skip_special_tokens() : true;

  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (tokenizer == nullptr) return NeedsTokenizer("a text prompt");
      if (request.text().empty()) return Invalid("prompt text is empty");
      if (absl::Status st = CheckTokenizeSize(request.text().size(), limits, "prompt text");
          !st.ok()) {
        return st;
      }
      if (absl::Status st = CheckUtf8(request.text(), "prompt text"); !st.ok()) return st;
      const bool add_bos = request.has_add_bos_token() ? request.add_bos_token() : true;
      if (add_bos && tokenizer->bos_id() >= 0) er.prompt_ids.push_back(tokenizer->bos_id());
      const std::vector<int32_t> ids = tokenizer->Encode(request.text());
      er.prompt_ids.insert(er.prompt_ids.end(), ids.begin(), ids.end());
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      er.prompt_ids.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    default:
      return Invalid("prompt is not set: send text or token_ids");
  }
  if (absl::Status st = FillDefaultMaxTokens(er.sampling, request.sampling().has_max_tokens(),
                                             er.prompt_ids.size(), limits);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = CheckPrompt(er.prompt_ids, er.sampling, limits,
                                    request.has_token_ids() ? "prompt token_ids" : "prompt");
      !st.ok()) {
    return st;
  }
  return call;
}

absl::StatusOr<ChatCall> BuildChatCall(const v1::ChatRequest& request, const ModelLimits& limits,
                                       const Tokenizer* tokenizer) {
  if (tokenizer == nullptr) return NeedsTokenizer("Chat");
  ChatCall call;
  auto chat_template = ToChatTemplate(request.template_(), limits.chat_template);
  if (!chat_template.ok()) return chat_template.status();
  call.chat_template = *chat_template;
  call.return_token_ids = request.return_token_ids();
  auto n = CheckChoices(request.n());
  if (!n.ok()) return n.status();
  call.n = *n;

  if (request.messages().empty()) return Invalid("messages is empty");
  if (request.messages_size() > static_cast<int>(kMaxChatMessages)) {
    return Invalid("messages has ", request.messages_size(), " entries; at most ", kMaxChatMessages,
                   " are allowed");
  }
  std::vector<ChatMessage> messages;
  size_t text_bytes = 0;
  for (int i = 0; i < request.messages_size(); ++i) {
    const v1::ChatMessage& m = request.messages(i);
    const std::string field = absl::StrCat("messages[", i, "]");
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant" &&
        m.role() != "tool") {
      return Invalid(field, ".role '", m.role(), "' is not one of system, user, assistant, tool");
    }
    if (absl::Status st = CheckUtf8(m.content(), field + ".content"); !st.ok()) return st;
    if (!m.has_content() && (m.role() != "assistant" || m.tool_calls().empty())) {
      return Invalid(field,
                     ".content is unset; only an assistant turn with tool_calls may omit "
                     "it");
    }
    if (!m.tool_calls().empty() && m.role() != "assistant") {
      return Invalid(field, ".tool_calls are only allowed on assistant turns, not '", m.role(),
                     "'");
    }
    text_bytes += m.content().size();
    for (const v1::ToolCall& t : m.tool_calls()) {
      text_bytes += t.type().size() + t.name().size() + t.arguments().size();
    }
    if (absl::Status st = CheckTokenizeSize(text_bytes, limits, "the text of messages");
        !st.ok()) {
      return st;
    }
    ChatMessage out;
    out.role = m.role();
    out.content = m.content();
    out.content_is_null = !m.has_content();
    for (const v1::ToolCall& t : m.tool_calls()) {
      out.tool_calls.push_back({.type = t.type().empty() ? "function" : t.type(),
                                .name = t.name(),
                                .arguments = t.arguments()});
    }
    messages.push_back(std::move(out));
  }

  auto sampling = ToSamplingParams(request.sampling(), limits, /*have_tokenizer=*/true);
  if (!sampling.ok()) return sampling.status();

  const std::string bos = tokenizer->bos_id() >= 0
                              ? std::string(tokenizer->TokenBytes(tokenizer->bos_id()))
                              : std::string();
  auto prompt =
      RenderChatPrompt(call.chat_template, messages, /*add_generation_prompt=*/true, bos);
  if (!prompt.ok()) return Invalid("messages: ", prompt.status().message());
  call.prompt_opened_think =
      call.chat_template == ChatTemplate::kR1 && prompt->Text().ends_with("<think>\n");

  EngineRequest& er = call.request;
  er.sampling = *std::move(sampling);
  // Message text stays text: "<｜Assistant｜>" typed by a user must not open an assistant turn.
  er.prompt_ids = tokenizer->Encode(prompt->Pieces(!limits.special_tokens_in_messages));
  er.detokenize = true;
  er.skip_special_tokens = true;  // the tool-call markers are not special tokens: they stay
  if (absl::Status st = FillDefaultMaxTokens(er.sampling, request.sampling().has_max_tokens(),
                                             er.prompt_ids.size(), limits);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = CheckPrompt(er.prompt_ids, er.sampling, limits, "rendered chat prompt");
      !st.ok()) {
    return st;
  }
  return call;
}

}  // namespace dsv3::server
