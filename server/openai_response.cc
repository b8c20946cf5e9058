#include "server/openai_response.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace dsv3::server::openai {
namespace {

using json = nlohmann::json;

std::string TokenText(const Tokenizer* tokenizer, int32_t id) {
  return tokenizer == nullptr ? std::string() : std::string(tokenizer->TokenBytes(id));
}

json Bytes(const std::string& text) {
  json out = json::array();
  for (unsigned char c : text) out.push_back(static_cast<int>(c));
  return out;
}

// Chat's logprobs: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
json ChatLogprobs(const Tokenizer* tokenizer, const std::vector<TokenInfo>& tokens) {
  json content = json::array();
  for (const TokenInfo& t : tokens) {
    const std::string text = TokenText(tokenizer, t.id);
    json top = json::array();
    for (const TokenLogprob& alt : t.top) {
      const std::string alt_text = TokenText(tokenizer, alt.token);
      top.push_back({{"token", alt_text}, {"logprob", alt.logprob}, {"bytes", Bytes(alt_text)}});
    }
    content.push_back(
        {{"token", text}, {"logprob", t.logprob}, {"bytes", Bytes(text)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// Completions' logprobs: parallel lists, text offsets into the choice's text.
json CompletionLogprobs(const Tokenizer* tokenizer, const std::vector<TokenInfo>& tokens,
                        size_t offset) {
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const TokenInfo& t : tokens) {
    const std::string text = TokenText(tokenizer, t.id);
    out["tokens"].push_back(text);
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const TokenLogprob& alt : t.top) top[TokenText(tokenizer, alt.token)] = alt.logprob;
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(offset);
    offset += text.size();
  }
  return out;
}

json ToolCallsJson(const std::vector<NamedToolCall>& calls, int first_index, bool stream) {
  json out = json::array();
  for (size_t k = 0; k < calls.size(); ++k) {
    json call = {{"id", calls[k].id},
                 {"type", calls[k].call.type},
                 {"function",
                  {{"name", calls[k].call.name}, {"arguments", calls[k].call.arguments}}}};
    if (stream) call["index"] = first_index + static_cast<int>(k);
    out.push_back(std::move(call));
  }
  return out;
}

}  // namespace

ChoiceOutput::ChoiceOutput(const ParsedRequest& request, const Tokenizer* tokenizer,
                           std::string request_id, int index)
    : request_(request),
      tokenizer_(tokenizer),
      request_id_(std::move(request_id)),
      index_(index) {
  if (request.endpoint != Endpoint::kChat) return;
  if (request.chat_template == ChatTemplate::kR1) {
    reasoning_.emplace(request.prompt_opened_think);
  } else {
    tools_.emplace();
  }
}

Piece ChoiceOutput::Push(const OutputDelta& delta) {
  Piece piece;
  piece.text_offset = total_.text.size();
  std::string text = delta.text;
  if (!echoed_) {
    text = request_.echo_prefix + text;  // empty unless a completion asked for echo
    echoed_ = true;
  }
  if (reasoning_) {
    ReasoningParser::Delta d = reasoning_->Push(text);
    if (delta.finished()) {
      ReasoningParser::Delta rest = reasoning_->Flush();
      d.reasoning += rest.reasoning;
      d.content += rest.content;
    }
    piece.reasoning = std::move(d.reasoning);
    piece.text = std::move(d.content);
  } else if (tools_) {
    ToolCallParser::Delta d = tools_->Push(text);
    if (delta.finished()) {
      ToolCallParser::Delta rest = tools_->Flush();
      d.content += rest.content;
      for (ToolCall& call : rest.tool_calls) d.tool_calls.push_back(std::move(call));
    }
    piece.text = std::move(d.content);
    for (ToolCall& call : d.tool_calls) {
      piece.tool_calls.push_back(
          {absl::StrCat("call_", request_id_, "_", index_, "_", calls_++), std::move(call)});
    }
  } else {
    piece.text = std::move(text);
  }
  if (request_.logprobs) {
    for (size_t i = 0; i < delta.token_ids.size() && i < delta.logprobs.size(); ++i) {
      TokenInfo t{.id = delta.token_ids[i], .logprob = delta.logprobs[i], .top = {}};
      if (i < delta.top_logprobs.size()) {
        const auto& top = delta.top_logprobs[i];
        t.top.assign(top.begin(),
                     top.begin() + std::min<size_t>(top.size(), request_.top_logprobs));
      }
      piece.tokens.push_back(std::move(t));
    }
  }
  completion_tokens_ += static_cast<int32_t>(delta.token_ids.size());
  total_.text += piece.text;
  total_.reasoning += piece.reasoning;
  total_.tool_calls.insert(total_.tool_calls.end(), piece.tool_calls.begin(),
                           piece.tool_calls.end());
  total_.tokens.insert(total_.tokens.end(), piece.tokens.begin(), piece.tokens.end());
  if (delta.finished()) {
    finish_ = delta.finish_reason;
    error_ = delta.error;
    prompt_tokens_ = delta.prompt_tokens;
    completion_tokens_ = delta.completion_tokens;
    cached_tokens_ = delta.cached_tokens;
  }
  return piece;
}

std::string ChoiceOutput::finish_reason() const {
  if (finish_ == FinishReason::kLength) return "length";
  return total_.tool_calls.empty() ? "stop" : "tool_calls";
}

json UsageJson(const std::vector<ChoiceOutput>& choices) {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (const ChoiceOutput& c : choices) {
    prompt = c.prompt_tokens();
    cached = std::max<int64_t>(cached, c.cached_tokens());
    completion += c.completion_tokens();
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json ChunkChoice(const ParsedRequest& request, const Tokenizer* tokenizer,
                 const ChoiceOutput& choice, const Piece& piece, bool first, bool last) {
  json out = {{"index", choice.index()}};
  if (request.endpoint == Endpoint::kChat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!piece.reasoning.empty()) delta["reasoning_content"] = piece.reasoning;
    if (!piece.text.empty() || (first && piece.reasoning.empty())) delta["content"] = piece.text;
    if (!piece.tool_calls.empty()) {
      const int before = static_cast<int>(choice.total().tool_calls.size() -
                                          piece.tool_calls.size());
      delta["tool_calls"] = ToolCallsJson(piece.tool_calls, before, /*stream=*/true);
    }
    out["delta"] = std::move(delta);
    out["logprobs"] = request.logprobs ? ChatLogprobs(tokenizer, piece.tokens) : json(nullptr);
  } else {
    out["text"] = piece.text;
    out["logprobs"] = request.logprobs
                          ? CompletionLogprobs(tokenizer, piece.tokens, piece.text_offset)
                          : json(nullptr);
  }
  out["finish_reason"] = last ? json(choice.finish_reason()) : json(nullptr);
  return out;
}

json Chunk(const ParsedRequest& request, const ResponseMeta& meta, json choices,
           std::optional<json> usage) {
  json out = {{"id", meta.id},
              {"object", request.endpoint == Endpoint::kChat ? "chat.completion.chunk"
                                                             : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", std::move(choices)}};
  if (usage) out["usage"] = std::move(*usage);
  return out;
}

json FullResponse(const ParsedRequest& request, const Tokenizer* tokenizer,
                  const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices) {
  json list = json::array();
  for (const ChoiceOutput& c : choices) {
    const Piece& all = c.total();
    json entry = {{"index", c.index()}, {"finish_reason", c.finish_reason()}};
    if (request.endpoint == Endpoint::kChat) {
      json message = {{"role", "assistant"}};
      // OpenAI sends null content beside tool calls when the model wrote nothing else.
      message["content"] =
          all.text.empty() && !all.tool_calls.empty() ? json(nullptr) : json(all.text);
      if (request.chat_template == ChatTemplate::kR1) message["reasoning_content"] = all.reasoning;
      if (!all.tool_calls.empty()) {
        message["tool_calls"] = ToolCallsJson(all.tool_calls, 0, /*stream=*/false);
      }
      entry["message"] = std::move(message);
      entry["logprobs"] = request.logprobs ? ChatLogprobs(tokenizer, all.tokens) : json(nullptr);
    } else {
      entry["text"] = all.text;
      entry["logprobs"] =
          request.logprobs ? CompletionLogprobs(tokenizer, all.tokens, 0) : json(nullptr);
    }
    list.push_back(std::move(entry));
  }
  return {{"id", meta.id},
          {"object", request.endpoint == Endpoint::kChat ? "chat.completion" : "text_completion"},
          {"created", meta.created},
          {"model", meta.model},
          {"choices", std::move(list)},
          {"usage", UsageJson(choices)}};
}

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace dsv3::server::openai
