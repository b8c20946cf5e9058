// What a request that leaves fields unset gets, taken from the checkpoint (as the model's
// authors meant it to be run) and the flags: the chat template (R1 or V3), the sampling values
// of generation_config.json, and the model names the APIs answer to.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sampling/sampling_params.h"
#include "engine/tokenizer/chat_template.h"

namespace dsv3::server {

struct ServingDefaults {
  ChatTemplate chat_template = ChatTemplate::kV3;
  SamplingParams sampling;
  std::vector<std::string> served_names;  // never empty once read; the first is reported
};

// R1 when the Jinja chat template's generation prompt opens a think section (R1's
// "<｜Assistant｜><think>\n"), else V3.
ChatTemplate DetectChatTemplate(std::string_view jinja);

// Sampling defaults from generation_config.json's text: temperature, top_p, top_k,
// repetition_penalty; do_sample false means greedy. Fields it lacks keep SamplingParams'
// defaults. InvalidArgument (naming the field) when the JSON or a value is malformed.
absl::StatusOr<SamplingParams> SamplingFromGenerationConfig(std::string_view json);

// Reads `model_dir`/generation_config.json and `tokenizer_dir`/tokenizer_config.json (both
// optional). `chat_template_flag` is "auto", "v3" or "r1"; `names` the --served-model-name
// values (empty: the model directory's last component).
absl::StatusOr<ServingDefaults> ReadServingDefaults(const std::string& model_dir,
                                                    const std::string& tokenizer_dir,
                                                    const std::string& chat_template_flag,
                                                    std::vector<std::string> names);

// The names the APIs answer to: the --served-model-name values `names`, or when there are none
// the last component of `model_dir`. The first is the model_name of every metric.
std::vector<std::string> ServedModelNames(std::vector<std::string> names,
                                          const std::string& model_dir);

}  // namespace dsv3::server
