#include "server/serving_defaults.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dsv3::server {
namespace {

absl::StatusOr<std::string> ReadOptional(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::string();
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

ChatTemplate DetectChatTemplate(std::string_view jinja) {
  // R1's template ends "{{'<｜Assistant｜><think>\\n'}}"; V3's adds the bare assistant tag.
  return jinja.find("<｜Assistant｜><think>") != std::string_view::npos ? ChatTemplate::kR1
                                                                       : ChatTemplate::kV3;
}

absl::StatusOr<SamplingParams> SamplingFromGenerationConfig(std::string_view text) {
  SamplingParams s;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError("generation_config.json is not a JSON object");
  }
  auto number = [&](const char* key, auto& out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat("generation_config.json: ", key, " is not a number"));
    }
    out = j[key].get<std::remove_reference_t<decltype(out)>>();
    return absl::OkStatus();
  };
  for (absl::Status st : {number("temperature", s.temperature), number("top_p", s.top_p),
                          number("top_k", s.top_k),
                          number("repetition_penalty", s.repetition_penalty)}) {
    if (!st.ok()) return st;
  }
  // transformers' top_k = 0 and 50 (its default, written by save_pretrained) both mean "as the
  // authors chose"; 0 is "all" here too.
  if (j.contains("do_sample") && j["do_sample"].is_boolean() && !j["do_sample"].get<bool>()) {
    s.temperature = 0;
  }
  if (absl::Status st = s.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("generation_config.json: ", st.message()));
  }
  return s;
}

absl::StatusOr<ServingDefaults> ReadServingDefaults(const std::string& model_dir,
                                                    const std::string& tokenizer_dir,
                                                    const std::string& chat_template_flag,
                                                    std::vector<std::string> names) {
  ServingDefaults d;
  auto generation = ReadOptional(std::filesystem::path(model_dir) / "generation_config.json");
  if (!generation.ok()) return generation.status();
  if (!generation->empty()) {
    auto sampling = SamplingFromGenerationConfig(*generation);
    if (!sampling.ok()) return sampling.status();
    d.sampling = *sampling;
  }
  if (chat_template_flag == "r1") {
    d.chat_template = ChatTemplate::kR1;
  } else if (chat_template_flag == "v3") {
    d.chat_template = ChatTemplate::kV3;
  } else {
    auto config = ReadOptional(std::filesystem::path(tokenizer_dir) / "tokenizer_config.json");
    if (!config.ok()) return config.status();
    const nlohmann::json j = nlohmann::json::parse(*config, nullptr, false);
    if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string()) {
      d.chat_template = DetectChatTemplate(j["chat_template"].get<std::string>());
    }
  }
  d.served_names = ServedModelNames(std::move(names), model_dir);
  return d;
}

std::vector<std::string> ServedModelNames(std::vector<std::string> names,
                                          const std::string& model_dir) {
  if (names.empty()) {
    std::filesystem::path dir(model_dir);
    if (!dir.has_filename()) dir = dir.parent_path();  // a trailing slash
    names.push_back(dir.filename().string());
  }
  return names;
}

}  // namespace dsv3::server
