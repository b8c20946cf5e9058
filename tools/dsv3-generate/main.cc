// dsv3-generate: offline generation from token ids on the CPU backend.
//
//   dsv3-generate --model DIR --prompt-ids 1,2,3 [--prompt-ids 4,5] --max-new-tokens N
//                 [--logits-out FILE.npy]
//
// stdout: one line per prompt, the generated token ids separated by spaces. Logs go to stderr.
// --logits-out writes the float32 logits of every prompt position from one prefill, [T, V].
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/model/model.h"
#include "engine/util/npy.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace dsv3 {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, int64_t vocab) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError("--prompt-ids: '" + std::string(part) + "' is not an integer");
    }
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError("--prompt-ids: token id " + std::to_string(id) +
                                        " is outside the vocabulary [0, " +
                                        std::to_string(vocab) + ")");
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids: empty prompt");
  return ids;
}

int32_t Argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (v[i] > v[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

struct Options {
  std::string model;
  std::vector<std::string> prompt_ids;
  int max_new_tokens = 16;
  std::string logits_out;
  int threads = 0;
  bool ignore_eos = false;
  std::string mla_mode = "auto";
};

int Run(const Options& opt) {
  CpuBackend backend(opt.threads);
  auto model = DeepseekV3Model::Load(opt.model, backend);
  if (!model.ok()) {
    spdlog::error("{}", std::string(model.status().message()));
    return 1;
  }
  const ModelConfig& config = (*model)->config();
  const MlaMode mode = opt.mla_mode == "naive"      ? MlaMode::kNaive
                       : opt.mla_mode == "absorbed" ? MlaMode::kAbsorbed
                                                    : MlaMode::kAuto;
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& text : opt.prompt_ids) {
    auto ids = ParseIds(text, config.vocab_size);
    if (!ids.ok()) {
      spdlog::error("{}", std::string(ids.status().message()));
      return 2;
    }
    prompts.push_back(*std::move(ids));
  }
  if (!opt.logits_out.empty() && prompts.size() != 1) {
    spdlog::error("--logits-out needs exactly one --prompt-ids");
    return 2;
  }

  constexpr int32_t kBlockSize = 64;
  for (const auto& prompt : prompts) {
    // One sequence at a time in a cache of contiguous blocks.
    const int64_t total = static_cast<int64_t>(prompt.size()) + opt.max_new_tokens;
    const int64_t num_blocks = (total + kBlockSize - 1) / kBlockSize;
    KvCache cache(backend, config, num_blocks, kBlockSize);
    std::vector<int32_t> table(num_blocks);
    for (int64_t b = 0; b < num_blocks; ++b) table[b] = static_cast<int32_t>(b);

    ForwardBatch batch;
    batch.token_ids = prompt;
    batch.sequences.push_back({0, static_cast<int32_t>(prompt.size()), 0, table});
    const bool all_rows = !opt.logits_out.empty();
    for (int32_t r = all_rows ? 0 : static_cast<int32_t>(prompt.size()) - 1;
         r < static_cast<int32_t>(prompt.size()); ++r) {
      batch.logits_rows.push_back(r);
    }
    std::vector<float> logits;
    (*model)->Forward(batch, cache, logits, mode);
    if (all_rows) {
      auto status = WriteNpyF32(opt.logits_out,
                                {static_cast<int64_t>(prompt.size()), config.vocab_size},
                                logits.data());
      if (!status.ok()) {
        spdlog::error("{}", std::string(status.message()));
        return 1;
      }
    }
    std::vector<int32_t> generated;
    int32_t context = static_cast<int32_t>(prompt.size());
    const float* last = logits.data() + (batch.logits_rows.size() - 1) * config.vocab_size;
    int32_t next = Argmax(last, config.vocab_size);
    while (static_cast<int>(generated.size()) < opt.max_new_tokens) {
      generated.push_back(next);
      const bool eos = std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), next) !=
                       config.eos_token_ids.end();
      if ((eos && !opt.ignore_eos) || static_cast<int>(generated.size()) == opt.max_new_tokens) break;
      ForwardBatch step;
      step.token_ids = {next};
      step.sequences.push_back({0, 1, context, table});
      step.logits_rows = {0};
      (*model)->Forward(step, cache, logits, mode);
      ++context;
      next = Argmax(logits.data(), config.vocab_size);
    }
    std::cout << absl::StrJoin(generated, " ") << "\n";
  }
  std::cout.flush();
  return 0;
}

}  // namespace
}  // namespace dsv3

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("dsv3"));
  dsv3::Options opt;
  CLI::App app{"dsv3-generate: offline DeepSeek-V3 generation from token ids"};
  app.add_option("--model", opt.model, "model directory (config.json + safetensors)")->required();
  app.add_option("--prompt-ids", opt.prompt_ids, "comma-separated token ids; repeat for more prompts")
      ->required();
  app.add_option("--max-new-tokens", opt.max_new_tokens, "tokens to generate per prompt")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--logits-out", opt.logits_out,
                 "write the prompt's logits [T, V] as float32 .npy (one prompt only)");
  app.add_option("--threads", opt.threads, "CPU threads (0: all)");
  app.add_flag("--ignore-eos", opt.ignore_eos, "keep generating after an end-of-sequence token");
  app.add_option("--mla-mode", opt.mla_mode, "auto, naive or absorbed")
      ->check(CLI::IsMember({"auto", "naive", "absorbed"}));
  CLI11_PARSE(app, argc, argv);
  return dsv3::Run(opt);
}
