// dsv3-tokenize: the tokenizer on the command line, one JSON value per line in and out.
//   (default)   "text"                         -> [ids]            (no BOS)
//   --decode    [ids]                          -> "text"           (--skip-special drops specials)
//   --chat      {"messages": [...], "add_generation_prompt": bool}
//                                              -> {"text": ..., "ids": [...]}
// A line that cannot be handled gives {"error": "..."} and the next line is read.

#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

// Keys keep their insertion order, so that "text" comes before "ids".
using json = nlohmann::ordered_json;

absl::StatusOr<std::vector<dsv3::ChatMessage>> ParseMessages(const json& request) {
  if (!request.is_object() || !request.contains("messages") || !request["messages"].is_array()) {
    return absl::InvalidArgumentError("expected an object with a \"messages\" array");
  }
  std::vector<dsv3::ChatMessage> messages;
  for (const json& m : request["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError("every message needs a string \"role\"");
    }
    dsv3::ChatMessage message;
    message.role = m["role"];
    const auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      message.content_is_null = true;
    } else if (content->is_string()) {
      message.content = *content;
    } else {
      return absl::InvalidArgumentError("\"content\" must be a string or null");
    }
    if (const auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
      if (!calls->is_array()) return absl::InvalidArgumentError("\"tool_calls\" must be an array");
      for (const json& c : *calls) {
        const json function = c.value("function", json());
        if (!c.is_object() || !function.is_object() || !function.contains("name") ||
            !function["name"].is_string() || !function.contains("arguments") ||
            !function["arguments"].is_string()) {
          return absl::InvalidArgumentError(
              "a tool call needs \"function\": {\"name\": string, \"arguments\": string}");
        }
        message.tool_calls.push_back(
            {c.value("type", "function"), function["name"], function["arguments"]});
      }
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

absl::StatusOr<json> HandleLine(const dsv3::Tokenizer& tokenizer, const json& input, bool decode,
                                bool skip_special, bool chat, dsv3::ChatTemplate chat_template) {
  if (chat) {
    absl::StatusOr<std::vector<dsv3::ChatMessage>> messages = ParseMessages(input);
    if (!messages.ok()) return messages.status();
    const json gen = input.value("add_generation_prompt", json(false));
    if (!gen.is_boolean()) {
      return absl::InvalidArgumentError("\"add_generation_prompt\" must be a boolean");
    }
    const std::string bos(tokenizer.TokenBytes(tokenizer.bos_id()));
    absl::StatusOr<std::string> text =
        dsv3::RenderChat(chat_template, *messages, gen.get<bool>(), bos);
    if (!text.ok()) return text.status();
    return json{{"text", *text}, {"ids", tokenizer.Encode(*text)}};
  }
  if (decode) {
    if (!input.is_array()) return absl::InvalidArgumentError("expected an array of ids");
    std::vector<int32_t> ids;
    for (const json& id : input) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= tokenizer.vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat("bad token id ", id.dump()));
      }
      ids.push_back(id.get<int32_t>());
    }
    return json(tokenizer.Decode(ids, skip_special));
  }
  if (!input.is_string()) return absl::InvalidArgumentError("expected a string");
  return json(tokenizer.Encode(input.get_ref<const std::string&>()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Encode, decode or render chats with a DeepSeek-V3 tokenizer, JSON lines on stdin"};
  std::string path;
  bool decode = false;
  bool skip_special = false;
  bool chat = false;
  std::string template_name = "v3";
  app.add_option("--tokenizer", path, "tokenizer.json or the directory holding it")->required();
  app.add_flag("--decode", decode, "input lines are arrays of ids; output their text");
  app.add_flag("--skip-special", skip_special, "with --decode: leave out special tokens");
  app.add_flag("--chat", chat, "input lines are {\"messages\", \"add_generation_prompt\"}");
  app.add_option("--template", template_name, "chat format for --chat")
      ->check(CLI::IsMember({"v3", "r1"}));
  CLI11_PARSE(app, argc, argv);
  if (decode && chat) {
    std::cerr << "--decode and --chat exclude each other\n";
    return 2;
  }

  absl::StatusOr<std::unique_ptr<dsv3::Tokenizer>> tokenizer = dsv3::Tokenizer::Load(path);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  const dsv3::ChatTemplate chat_template =
      template_name == "r1" ? dsv3::ChatTemplate::kR1 : dsv3::ChatTemplate::kV3;

  std::ios::sync_with_stdio(false);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    json output;
    const json input = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (input.is_discarded()) {
      output = {{"error", "not valid JSON"}};
    } else if (absl::StatusOr<json> result =
                   HandleLine(**tokenizer, input, decode, skip_special, chat, chat_template);
               result.ok()) {
      output = *std::move(result);
    } else {
      output = {{"error", std::string(result.status().message())}};
    }
    std::cout << output.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  return 0;
}
