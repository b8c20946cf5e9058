#include "server/openai_request.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/openai_error.h"

namespace dsv3::server::openai {
namespace {

using json = nlohmann::json;

// Fields both endpoints take (vLLM's sampling extensions included).
const std::set<std::string_view> kCommonFields = {
    "max_tokens",        "temperature",       "top_p",          "top_k",
    "min_p",             "presence_penalty",  "frequency_penalty", "repetition_penalty",
    "seed",              "stop",              "min_tokens",     "ignore_eos",
    "stop_token_ids",    "n",                 "stream",         "stream_options",
    "model",             "logprobs",          "logit_bias",     "response_format",
    "user",              "metadata",          "store",          "service_tier"};
const std::set<std::string_view> kChatFields = {"messages", "max_completion_tokens",
                                                "top_logprobs", "tools", "tool_choice",
                                                "parallel_tool_calls"};
const std::set<std::string_view> kCompletionFields = {"prompt", "echo", "suffix", "best_of",
                                                      "skip_special_tokens"};

// Typed readers: a field of the wrong type is a 400 naming it; null counts as absent.
bool Present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

absl::StatusOr<std::optional<double>> Number(const json& j, const char* key) {
  if (!Present(j, key)) return std::optional<double>();
  if (!j[key].is_number()) return InvalidParam(key, absl::StrCat(key, " must be a number"));
  return std::optional<double>(j[key].get<double>());
}

absl::StatusOr<std::optional<int64_t>> Integer(const json& j, const char* key) {
  if (!Present(j, key)) return std::optional<int64_t>();
  if (!j[key].is_number_integer()) {
    return InvalidParam(key, absl::StrCat(key, " must be an integer"));
  }
  return std::optional<int64_t>(j[key].get<int64_t>());
}

absl::StatusOr<std::optional<bool>> Bool(const json& j, const char* key) {
  if (!Present(j, key)) return std::optional<bool>();
  if (!j[key].is_boolean()) return InvalidParam(key, absl::StrCat(key, " must be a boolean"));
  return std::optional<bool>(j[key].get<bool>());
}

// An int32 field within [lo, hi] (wider values would wrap in the proto).
absl::StatusOr<std::optional<int32_t>> Int32(const json& j, const char* key, int64_t lo,
                                             int64_t hi) {
  DSV3_ASSIGN_OR_RETURN(const std::optional<int64_t> v, Integer(j, key));
  if (!v) return std::optional<int32_t>();
  if (*v < lo || *v > hi) {
    return InvalidParam(key, absl::StrCat(key, " must be in [", lo, ", ", hi, "], got ", *v));
  }
  return std::optional<int32_t>(static_cast<int32_t>(*v));
}

absl::Status CheckFields(const json& body, const std::set<std::string_view>& endpoint_fields) {
  for (const auto& [key, value] : body.items()) {
    if (!kCommonFields.contains(key) && !endpoint_fields.contains(key)) {
      return InvalidParam(key, absl::StrCat("unknown or unsupported field '", key, "'"));
    }
  }
  // Fields accepted only in their neutral form: anything else would change the output.
  if (Present(body, "logit_bias") &&
      !(body["logit_bias"].is_object() && body["logit_bias"].empty())) {
    return InvalidParam("logit_bias", "logit_bias is not supported");
  }
  if (Present(body, "response_format")) {
    const json& f = body["response_format"];
    if (!f.is_object() || f.value("type", "") != "text") {
      return InvalidParam("response_format",
                          "response_format other than {\"type\": \"text\"} (json_object, "
                          "json_schema) is not supported: this server has no structured output");
    }
  }
  if (Present(body, "suffix")) return InvalidParam("suffix", "suffix is not supported");
  if (Present(body, "best_of") && body["best_of"] != 1) {
    return InvalidParam("best_of", "best_of other than 1 is not supported; use n");
  }
  return absl::OkStatus();
}

absl::Status FillSampling(const json& body, Endpoint endpoint, v1::SamplingParameters& s) {
  DSV3_ASSIGN_OR_RETURN(auto max_tokens, Int32(body, "max_tokens", INT32_MIN, INT32_MAX));
  if (endpoint == Endpoint::kChat) {
    DSV3_ASSIGN_OR_RETURN(auto max_completion, Int32(body, "max_completion_tokens", INT32_MIN, INT32_MAX));
    if (max_completion && max_tokens && *max_completion != *max_tokens) {
      return InvalidParam("max_completion_tokens",
                          "max_tokens and max_completion_tokens differ; send one");
    }
    if (max_completion) max_tokens = max_completion;
  }
  if (max_tokens) s.set_max_tokens(*max_tokens);
  for (const char* key : {"temperature", "top_p", "min_p", "presence_penalty",
                          "frequency_penalty", "repetition_penalty"}) {
    DSV3_ASSIGN_OR_RETURN(auto v, Number(body, key));
    if (!v) continue;
    const auto value = static_cast<float>(*v);
    const std::string_view k = key;
    if (k == "temperature") s.set_temperature(value);
    if (k == "top_p") s.set_top_p(value);
    if (k == "min_p") s.set_min_p(value);
    if (k == "presence_penalty") s.set_presence_penalty(value);
    if (k == "frequency_penalty") s.set_frequency_penalty(value);
    if (k == "repetition_penalty") s.set_repetition_penalty(value);
  }
  DSV3_ASSIGN_OR_RETURN(auto top_k, Int32(body, "top_k", -1, INT32_MAX));
  if (top_k) s.set_top_k(*top_k);
  DSV3_ASSIGN_OR_RETURN(auto min_tokens, Int32(body, "min_tokens", 0, INT32_MAX));
  if (min_tokens) s.set_min_tokens(*min_tokens);
  DSV3_ASSIGN_OR_RETURN(auto seed, Integer(body, "seed"));
  if (seed) s.set_seed(static_cast<uint64_t>(*seed));
  DSV3_ASSIGN_OR_RETURN(auto ignore_eos, Bool(body, "ignore_eos"));
  if (ignore_eos) s.set_ignore_eos(*ignore_eos);
  if (Present(body, "stop")) {
    const json& stop = body["stop"];
    if (stop.is_string()) {
      s.add_stop(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const json& item : stop) {
        if (!item.is_string()) return InvalidParam("stop", "stop must hold strings");
        s.add_stop(item.get<std::string>());
      }
    } else {
      return InvalidParam("stop", "stop must be a string or a list of strings");
    }
  }
  if (Present(body, "stop_token_ids")) {
    const json& ids = body["stop_token_ids"];
    if (!ids.is_array()) return InvalidParam("stop_token_ids", "stop_token_ids must be a list");
    for (const json& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < INT32_MIN ||
          id.get<int64_t>() > INT32_MAX) {
        return InvalidParam("stop_token_ids", "stop_token_ids must hold token ids");
      }
      s.add_stop_token_ids(id.get<int32_t>());
    }
  }
  return absl::OkStatus();
}

// Text of a message's content: a string, or a list of {"type": "text", "text": ...} parts.
absl::StatusOr<std::optional<std::string>> ContentText(const json& m, const std::string& field) {
  if (!Present(m, "content")) return std::optional<std::string>();
  const json& c = m["content"];
  if (c.is_string()) return std::optional<std::string>(c.get<std::string>());
  if (!c.is_array()) return InvalidParam(field, field + " must be a string or a list of parts");
  std::string text;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string part = absl::StrCat(field, "[", i, "]");
    if (!c[i].is_object() || c[i].value("type", "") != "text" || !c[i].contains("text") ||
        !c[i]["text"].is_string()) {
      return InvalidParam(part, part + " is not a text part; only text content is supported");
    }
    text += c[i]["text"].get<std::string>();
  }
  return std::optional<std::string>(std::move(text));
}

// The tools' descriptions for V3's system prompt, and the call format its template renders.
absl::StatusOr<std::string> ToolsPrompt(const json& tools) {
  if (!tools.is_array()) return InvalidParam("tools", "tools must be a list");
  std::string out =
      "## Tools\n\nYou can call these functions; answer with a call when one helps:\n";
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string field = absl::StrCat("tools[", i, "]");
    const json& t = tools[i];
    if (!t.is_object() || t.value("type", "") != "function" || !t.contains("function") ||
        !t["function"].is_object() || !t["function"].contains("name") ||
        !t["function"]["name"].is_string()) {
      return InvalidParam(field, field + " must be {\"type\": \"function\", \"function\": "
                                         "{\"name\": ..., \"parameters\": ...}}");
    }
    const json& f = t["function"];
    absl::StrAppend(&out, "\n### ", f["name"].get<std::string>(), "\n");
    if (f.contains("description") && f["description"].is_string()) {
      absl::StrAppend(&out, f["description"].get<std::string>(), "\n");
    }
    if (f.contains("parameters")) {
      absl::StrAppend(&out, "Parameters (JSON Schema): ", f["parameters"].dump(), "\n");
    }
  }
  absl::StrAppend(&out,
                  "\nTo call functions, write exactly:\n<｜tool▁calls▁begin｜><｜tool▁call▁begin"
                  "｜>function<｜tool▁sep｜>NAME\n```json\nARGUMENTS\n```<｜tool▁call▁end｜><"
                  "｜tool▁calls▁end｜>\nwith one <｜tool▁call▁begin｜>...<｜tool▁call▁end｜> per "
                  "call.");
  return out;
}

absl::Status FillMessages(const json& body, v1::ChatRequest& chat) {
  if (!body.contains("messages") || !body["messages"].is_array()) {
    return InvalidParam("messages", "messages must be a list of messages");
  }
  const json& messages = body["messages"];
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    const json& m = messages[i];
    if (!m.is_object()) return InvalidParam(field, field + " must be an object");
    for (const auto& [key, value] : m.items()) {
      if (key != "role" && key != "content" && key != "name" && key != "tool_calls" &&
          key != "tool_call_id" && key != "reasoning_content") {
        return InvalidParam(field + "." + key,
                            absl::StrCat("unknown or unsupported field '", field, ".", key, "'"));
      }
    }
    if (!m.contains("role") || !m["role"].is_string()) {
      return InvalidParam(field + ".role", field + ".role must be a string");
    }
    v1::ChatMessage* out = chat.add_messages();
    // OpenAI's "developer" role is its newer name for the system prompt.
    const std::string role = m["role"].get<std::string>();
    out->set_role(role == "developer" ? "system" : role);
    DSV3_ASSIGN_OR_RETURN(auto content, ContentText(m, field + ".content"));
    if (Present(m, "tool_calls")) {
      const json& calls = m["tool_calls"];
      if (!calls.is_array()) return InvalidParam(field + ".tool_calls", "tool_calls must be a list");
      for (size_t k = 0; k < calls.size(); ++k) {
        const std::string cf = absl::StrCat(field, ".tool_calls[", k, "]");
        const json& c = calls[k];
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object() ||
            !c["function"].contains("name") || !c["function"]["name"].is_string()) {
          return InvalidParam(cf, cf + " must be {\"type\": \"function\", \"function\": "
                                       "{\"name\": ..., \"arguments\": ...}}");
        }
        v1::ToolCall* call = out->add_tool_calls();
        call->set_type(c.value("type", "function"));
        call->set_name(c["function"]["name"].get<std::string>());
        const json& args = c["function"].value("arguments", json("{}"));
        call->set_arguments(args.is_string() ? args.get<std::string>() : args.dump());
      }
    }
    // V3's template renders tool calls only on a turn whose content is null; OpenAI clients
    // send "" as often as null there.
    if (content && !(content->empty() && out->tool_calls_size() > 0)) {
      out->set_content(*content);
    }
  }
  return absl::OkStatus();
}

absl::Status CheckModel(const json& body, std::span<const std::string> served_names,
                        std::string& model) {
  model = served_names.empty() ? "" : served_names.front();
  if (!Present(body, "model")) return absl::OkStatus();
  if (!body["model"].is_string()) return InvalidParam("model", "model must be a string");
  const std::string name = body["model"].get<std::string>();
  for (const std::string& served : served_names) {
    if (served == name) {
      model = name;
      return absl::OkStatus();
    }
  }
  return WithParam(absl::NotFoundError(absl::StrCat("the model '", name,
                                                    "' does not exist; this server serves '",
                                                    model, "'")),
                   "model");
}

absl::Status ParseCommon(const json& body, ParsedRequest& out) {
  DSV3_ASSIGN_OR_RETURN(auto n, Int32(body, "n", 1, kMaxChoices));
  out.n = n.value_or(1);
  DSV3_ASSIGN_OR_RETURN(auto stream, Bool(body, "stream"));
  out.stream = stream.value_or(false);
  if (Present(body, "stream_options")) {
    const json& o = body["stream_options"];
    if (!out.stream) return InvalidParam("stream_options", "stream_options needs stream: true");
    if (!o.is_object()) return InvalidParam("stream_options", "stream_options must be an object");
    for (const auto& [key, value] : o.items()) {
      if (key != "include_usage") {
        return InvalidParam("stream_options." + key,
                            absl::StrCat("unknown field 'stream_options.", key, "'"));
      }
    }
    DSV3_ASSIGN_OR_RETURN(auto usage, Bool(o, "include_usage"));
    out.include_usage = usage.value_or(false);
  }
  return absl::OkStatus();
}

absl::Status ParseChat(const json& body, const ModelLimits& limits, const Tokenizer* tokenizer,
                       ParsedRequest& out) {
  v1::ChatRequest chat;
  DSV3_RETURN_IF_ERROR(FillSampling(body, Endpoint::kChat, *chat.mutable_sampling()));
  DSV3_ASSIGN_OR_RETURN(auto logprobs, Bool(body, "logprobs"));
  out.logprobs = logprobs.value_or(false);
  DSV3_ASSIGN_OR_RETURN(auto top, Int32(body, "top_logprobs", 0, kMaxLogprobs));
  if (top && !out.logprobs) return InvalidParam("top_logprobs", "top_logprobs needs logprobs: true");
  out.top_logprobs = top.value_or(0);
  // The engine returns the chosen token's log probability only alongside alternatives.
  if (out.logprobs) chat.mutable_sampling()->set_logprobs(std::max(1, out.top_logprobs));

  DSV3_RETURN_IF_ERROR(FillMessages(body, chat));
  std::string tool_choice = "auto";
  if (Present(body, "tool_choice")) {
    const json& c = body["tool_choice"];
    if (!c.is_string() || (c != "auto" && c != "none")) {
      return InvalidParam("tool_choice",
                          "tool_choice 'required' or a named function is not supported (it needs "
                          "structured output); use 'auto' or 'none'");
    }
    tool_choice = c.get<std::string>();
  }
  if (Present(body, "tools") && tool_choice != "none") {
    DSV3_ASSIGN_OR_RETURN(auto tools, ToolsPrompt(body["tools"]));
    // The V3 template puts all system text first; the tools go after the client's.
    v1::ChatMessage system;
    system.set_role("system");
    system.set_content(tools);
    chat.mutable_messages()->Add(std::move(system));
  }
  auto call = BuildChatCall(chat, limits, tokenizer);
  if (!call.ok()) return call.status();
  out.request = std::move(call->request);
  out.chat_template = call->chat_template;
  out.prompt_opened_think = call->prompt_opened_think;
  return absl::OkStatus();
}

absl::Status ParseCompletion(const json& body, const ModelLimits& limits,
                             const Tokenizer* tokenizer, ParsedRequest& out) {
  v1::GenerateRequest generate;
  if (absl::Status st = FillSampling(body, Endpoint::kCompletions, *generate.mutable_sampling());
      !st.ok()) {
    return st;
  }
  DSV3_ASSIGN_OR_RETURN(auto logprobs, Int32(body, "logprobs", 0, kMaxLogprobs));
  out.logprobs = logprobs.has_value();
  out.top_logprobs = logprobs.value_or(0);
  if (out.logprobs) generate.mutable_sampling()->set_logprobs(std::max(1, out.top_logprobs));
  DSV3_ASSIGN_OR_RETURN(auto skip_special, Bool(body, "skip_special_tokens"));
  if (skip_special) generate.set_skip_special_tokens(*skip_special);

  if (!Present(body, "prompt")) return InvalidParam("prompt", "prompt is required");
  json prompt = body["prompt"];
  // A list of one prompt is that prompt; several would be a batch, which is not supported.
  if (prompt.is_array() && !prompt.empty() && (prompt[0].is_string() || prompt[0].is_array())) {
    if (prompt.size() != 1) {
      return InvalidParam("prompt", "a batch of several prompts is not supported; send one");
    }
    prompt = prompt[0];
  }
  if (prompt.is_string()) {
    generate.set_text(prompt.get<std::string>());
  } else if (prompt.is_array()) {
    for (const json& id : prompt) {
      if (!id.is_number_integer() || id.get<int64_t>() < INT32_MIN ||
          id.get<int64_t>() > INT32_MAX) {
        return InvalidParam("prompt", "prompt must be a string or a list of token ids");
      }
      generate.mutable_token_ids()->add_ids(id.get<int32_t>());
    }
  } else {
    return InvalidParam("prompt", "prompt must be a string or a list of token ids");
  }
  generate.set_return_token_ids(true);
  generate.set_return_text(tokenizer != nullptr);
  auto call = BuildGenerateCall(generate, limits, tokenizer);
  if (!call.ok()) return call.status();
  out.request = std::move(call->request);

  DSV3_ASSIGN_OR_RETURN(auto echo, Bool(body, "echo"));
  if (echo.value_or(false)) {
    if (out.logprobs) {
      return InvalidParam("echo",
                          "echo with logprobs needs prompt log probabilities, which this server "
                          "does not compute");
    }
    if (tokenizer == nullptr) return InvalidParam("echo", "echo needs a tokenizer");
    out.echo_prefix = prompt.is_string()
                          ? prompt.get<std::string>()
                          : tokenizer->Decode(out.request.prompt_ids, /*skip_special=*/true);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, std::string_view body,
                                           const ModelLimits& limits, const Tokenizer* tokenizer,
                                           std::span<const std::string> served_names) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("the request body is not a JSON object");
  }
  ParsedRequest out;
  out.endpoint = endpoint;
  if (absl::Status st =
          CheckFields(j, endpoint == Endpoint::kChat ? kChatFields : kCompletionFields);
      !st.ok()) {
    return st;
  }
  DSV3_RETURN_IF_ERROR(CheckModel(j, served_names, out.model));
  DSV3_RETURN_IF_ERROR(ParseCommon(j, out));
  absl::Status st = endpoint == Endpoint::kChat ? ParseChat(j, limits, tokenizer, out)
                                                : ParseCompletion(j, limits, tokenizer, out);
  if (!st.ok()) return st;
  return out;
}

}  // namespace dsv3::server::openai
