// dsv3-eval: the quality of a model on a text, in the style of llama.cpp's llama-perplexity.
//
//   dsv3-eval --model DIR (--text-file F | --ids-file F) [--context N] [--device cpu|cuda]
//             [--tp N] [--batch-windows N] [--save-logits FILE.npy] [--kl-base FILE.npy]
//
// Perplexity of the inputs, and with --kl-base how far this run's next-token distributions are
// from an earlier run's (another device, tensor-parallel degree or build) saved with
// --save-logits. Windows and scored positions: engine/eval/windows.h. stdout: one JSON object;
// progress on stderr. Exit status 0, or 1 with one error line. docs/quality.md has the details.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "engine/backend/backend_factory.h"
#include "engine/backend/cpu/gpu_emulation_backend.h"
#include "engine/eval/ids_file.h"
#include "engine/model/model.h"
#include "engine/model_group.h"
#include "engine/parallel/node_launch_flags.h"
#include "engine/tool_group.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"
#include "tools/dsv3-eval/evaluate.h"

namespace dsv3 {
namespace {

struct Options {
  std::string model;
  std::string text_file;
  std::string ids_file;
  std::string tokenizer;  // default: the model directory
  EvalOptions eval;
  std::string device = "cpu";
  std::string cpu_emulation = "none";
  int threads = 0;
  int tp = 1;
  NodeLaunchFlags node;
  double rank_timeout_s = 60;
  std::vector<std::string> argv;  // argv[1..], for spawned tensor-parallel workers
};

// --cpu-emulation: the CPU backend rounding as an engine would (the GPU's numerics: both).
GpuEmulation CpuEmulation(const std::string& emulation) {
  return GpuEmulation{.fp8_activations = emulation == "fp8" || emulation == "gpu",
                      .bf16_activations = emulation == "bf16" || emulation == "gpu"};
}

// --text-file as one sequence: BOS (the tokenizer's, else config.json's), then the file's ids.
absl::StatusOr<std::vector<int32_t>> TokenizeTextFile(const Options& opt,
                                                      const ModelConfig& config) {
  std::ifstream in(opt.text_file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--text-file ", opt.text_file, ": cannot open"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string dir = opt.tokenizer.empty() ? opt.model : opt.tokenizer;
  auto tokenizer = Tokenizer::Load(dir);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat("tokenizer (--tokenizer, default --model) ", dir, ": ",
                                     tokenizer.status().message()));
  }
  const int32_t bos = (*tokenizer)->bos_id() >= 0 ? (*tokenizer)->bos_id()
                                                  : static_cast<int32_t>(config.bos_token_id);
  std::vector<int32_t> ids = {bos};
  const std::vector<int32_t> text_ids = (*tokenizer)->Encode(text);
  ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  for (int32_t id : ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("--text-file ", opt.text_file, ": the tokenizer gives token id ", id,
                       ", outside the model's vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  spdlog::info("--text-file {}: {} bytes -> {} tokens (BOS {} first)", opt.text_file, text.size(),
               ids.size(), bos);
  return ids;
}

absl::StatusOr<std::string> EvaluateToJson(const Options& opt, ModelRunner& runner) {
  const ModelConfig& config = runner.model().config();
  std::vector<std::vector<int32_t>> sequences;
  if (!opt.ids_file.empty()) {
    DSV3_ASSIGN_OR_RETURN(sequences, ReadIdsFile(opt.ids_file, config.vocab_size));
  } else {
    DSV3_ASSIGN_OR_RETURN(std::vector<int32_t> ids, TokenizeTextFile(opt, config));
    sequences.push_back(std::move(ids));
  }
  DSV3_ASSIGN_OR_RETURN(EvalResult result, Evaluate(runner, sequences, opt.eval));
  const EvalSummary& s = result.summary;
  nlohmann::ordered_json j = {{"tokens", s.tokens},
                              {"nll", s.nll},
                              {"ppl", s.ppl},
                              {"windows", result.windows},
                              {"sequences", sequences.size()},
                              {"context", opt.eval.context},
                              {"vocab", config.vocab_size}};
  if (s.kl) {
    j["kld_mean"] = s.kl->kld_mean;
    j["kld_p99"] = s.kl->kld_p99;
    j["kld_max"] = s.kl->kld_max;
    j["top1_agree"] = s.kl->top1_agree;
    j["ppl_base"] = s.kl->ppl_base;
    j["ppl_ratio"] = s.kl->ppl_ratio;
  }
  return j.dump();
}

int Run(Options opt) {
  ModelGroupOptions go;
  go.tp = opt.tp;
  go.node = opt.node;
  go.rank_timeout = absl::Seconds(opt.rank_timeout_s);
  go.worker_args = opt.argv;
  auto make_backend = [&](int local_rank) -> absl::StatusOr<std::unique_ptr<Backend>> {
    if (opt.cpu_emulation == "none") return MakeBackend(opt.device, opt.threads, local_rank);
    return std::make_unique<GpuEmulationBackend>(opt.threads, CpuEmulation(opt.cpu_emulation));
  };
  return RunToolOnModelGroup(go, opt.model, make_backend, [&](ModelGroup& group) {
    auto json = EvaluateToJson(opt, group.runner());
    if (!json.ok()) {
      spdlog::error("{}", std::string(json.status().message()));
      return 1;
    }
    std::cout << *json << std::endl;
    return 0;
  });
}

}  // namespace
}  // namespace dsv3

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("dsv3"));
  dsv3::Options opt;
  CLI::App app{"dsv3-eval: perplexity and KL divergence of a DeepSeek-V3 model on a text"};
  app.add_option("--model", opt.model, "model directory (config.json + safetensors)")->required();
  auto* text = app.add_option("--text-file", opt.text_file,
                              "a text, tokenized with BOS first and scored as one sequence");
  auto* ids = app.add_option("--ids-file", opt.ids_file,
                             "one sequence per line as comma-separated token ids (no BOS added)");
  text->excludes(ids);
  app.add_option("--tokenizer", opt.tokenizer,
                 "tokenizer.json, or its directory, for --text-file (default: --model)");
  app.add_option("--context", opt.eval.context,
                 "tokens per window; a longer sequence is cut into windows of this many tokens "
                 "and only the second half of each is scored")
      ->check(CLI::Range(3, 1 << 24));
  app.add_option("--batch-windows", opt.eval.batch_windows, "windows per forward step")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--save-logits", opt.eval.save_logits,
                 "write the logits of the scored positions, [tokens, vocab] float32 .npy");
  app.add_option("--kl-base", opt.eval.kl_base,
                 "a --save-logits file of the same inputs: report KL divergence from it, top-1 "
                 "agreement and the perplexity ratio");
  app.add_option("--device", opt.device,
                 "backend: cpu, or cuda (GPU LOCAL_RANK, or one GPU per rank with --tp; builds "
                 "with the CUDA backend)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--cpu-emulation", opt.cpu_emulation,
                 "with --device cpu: round as an engine would. fp8: every FP8 linear's input "
                 "1x128 to e4m3 (the ideal FP8 engine); bf16: activations in BF16 where the GPU "
                 "holds them in BF16; gpu: both (the CUDA backend's numerics)")
      ->check(CLI::IsMember({"none", "fp8", "bf16", "gpu"}));
  app.add_option("--threads", opt.threads, "CPU threads of the backend and of scoring (0: all)");
  app.add_option("--tp", opt.tp,
                 "tensor-parallel ranks in all: spawns --tp - 1 workers on this host (--tp / "
                 "--nnodes - 1 per host with --nnodes); RANK, WORLD_SIZE, MASTER_ADDR and "
                 "MASTER_PORT launch ranks externally instead")
      ->check(CLI::Range(1, 64));
  dsv3::AddNodeLaunchFlags(app, opt.node);
  app.add_option("--rank-timeout-s", opt.rank_timeout_s,
                 "seconds a step may wait for another rank before the group is declared broken");
  CLI11_PARSE(app, argc, argv);
  if (opt.cpu_emulation != "none" && opt.device != "cpu") {
    std::cerr << "dsv3-eval: --cpu-emulation needs --device cpu\n";
    return 1;
  }
  if (opt.text_file.empty() == opt.ids_file.empty()) {
    std::cerr << "dsv3-eval: give exactly one of --text-file and --ids-file\n";
    return 1;
  }
  opt.eval.score_threads =
      opt.threads > 0 ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  opt.argv.assign(argv + 1, argv + argc);
  return dsv3::Run(std::move(opt));
}
