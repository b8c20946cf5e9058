// dsv3-generate: offline generation from token ids on the CPU backend (or the CUDA backend with
// --device cuda).
//
//   dsv3-generate --model DIR --prompt-ids 1,2,3 [--prompt-ids 4,5] [--prompts-file F]
//                 --max-new-tokens N [--logits-out FILE.npy] [sampling and engine flags]
//
// Every prompt is submitted at once to the engine (continuous batching, paged KV cache).
// stdout: one line per prompt, in order, the generated token ids separated by spaces.
// Logs and --stats go to stderr. --logits-out writes the float32 logits of every prompt position
// from one prefill, [T, V]; --mtp-logits-out the MTP module's logits [T-1, V] from the same kind of
// prefill (row j: position j, given token j+1, predicting token j+2). Greedy unless
// --temperature > 0. --speculative-tokens K drafts K tokens per step with the MTP module.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/backend/backend_factory.h"
#include "engine/engine.h"
#include "engine/kv_sizing.h"
#include "engine/model_group.h"
#include "engine/parallel/node_launch_flags.h"
#include "engine/tool_group.h"
#include "engine/model/model.h"
#include "engine/util/log_format.h"
#include "engine/util/npy.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"
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

struct Options {
  std::string model;
  std::vector<std::string> prompt_ids;
  std::string prompts_file;
  int max_new_tokens = 16;
  std::string logits_out;
  std::string mtp_logits_out;
  int speculative_tokens = 0;
  int threads = 0;
  std::string device = "cpu";
  std::string mla_mode = "auto";
  int64_t kv_blocks = 0;
  int64_t kv_memory_mb = 0;  // 0: --gpu-memory-utilization on cuda, kCpuKvMemoryMb on cpu
  double gpu_memory_utilization = 0.9;
  int64_t cuda_graph_memory_mb = 2048;
  int64_t max_model_len = 0;
  std::string log_format = "text";
  int block_size = 64;
  int max_batched_tokens = 8192;
  int max_running_seqs = 0;  // 0: min(256, max_batched_tokens)
  bool stats = false;
  SamplingParams sampling;
  int64_t seed = -1;
  int tp = 1;
  dsv3::NodeLaunchFlags node;
  bool dp_attention = false;
  double rank_timeout_s = 60;
  bool custom_all_reduce = false;
  std::vector<std::string> argv;  // argv[1..], for spawned tensor-parallel workers
};

absl::StatusOr<std::vector<std::string>> ReadPromptLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("--prompts-file: cannot open " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// The logits of every position of `prompt` from one prefill, written as [T, V] float32 .npy.
absl::Status WritePromptLogits(ModelRunner& runner, const std::vector<int32_t>& prompt,
                               MlaMode mode, const std::string& path) {
  constexpr int32_t kBlockSize = 64;
  const int32_t n = static_cast<int32_t>(prompt.size());
  const int32_t num_blocks = (n + kBlockSize - 1) / kBlockSize;
  DSV3_RETURN_IF_ERROR(runner.AllocateCache(num_blocks, kBlockSize));
  ForwardBatch batch;
  batch.token_ids = prompt;
  SequenceSlice seq{0, n, 0, {}};
  for (int32_t b = 0; b < num_blocks; ++b) seq.block_table.push_back(b);
  batch.sequences.push_back(std::move(seq));
  for (int32_t r = 0; r < n; ++r) batch.logits_rows.push_back(r);
  std::vector<float> logits;
  DSV3_RETURN_IF_ERROR(runner.Execute(batch, logits, mode));
  return WriteNpyF32(path, {n, runner.model().config().vocab_size}, logits.data());
}

// The MTP module's logits of every position j < T-1 of `prompt` ([T-1, V] float32 .npy): one
// prefill gives the final hidden states h_j, then one MTP pass takes (h_j, token j+1).
absl::Status WriteMtpLogits(ModelRunner& runner, const std::vector<int32_t>& prompt,
                            MlaMode mode, const std::string& path) {
  constexpr int32_t kBlockSize = 64;
  const int32_t n = static_cast<int32_t>(prompt.size());
  if (n < 2) return absl::InvalidArgumentError("--mtp-logits-out needs a prompt of >= 2 tokens");
  if (!runner.model().has_mtp()) {
    return absl::InvalidArgumentError("--mtp-logits-out: the model has no MTP module");
  }
  const int32_t num_blocks = (n + kBlockSize - 1) / kBlockSize;
  DSV3_RETURN_IF_ERROR(runner.AllocateCache(num_blocks, kBlockSize, /*mtp_layer=*/true));
  ForwardBatch batch;
  batch.token_ids = prompt;
  SequenceSlice seq{0, n, 0, {}};
  for (int32_t b = 0; b < num_blocks; ++b) seq.block_table.push_back(b);
  batch.sequences.push_back(seq);
  for (int32_t r = 0; r + 1 < n; ++r) batch.hidden_rows.push_back(r);
  std::vector<float> logits, hidden;  // hidden: [T-1, H]
  DSV3_RETURN_IF_ERROR(runner.Execute(batch, logits, mode, &hidden));

  ForwardBatch mtp;  // row j: position j, token j+1
  mtp.token_ids.assign(prompt.begin() + 1, prompt.end());
  seq.num_tokens = n - 1;
  mtp.sequences.push_back(seq);
  mtp.logits_rows = batch.hidden_rows;
  std::vector<float> mtp_logits, mtp_hidden;
  DSV3_RETURN_IF_ERROR(runner.ExecuteMtp(mtp, hidden, mtp_logits, mtp_hidden));
  return WriteNpyF32(path, {n - 1, runner.model().config().vocab_size}, mtp_logits.data());
}

std::string StatsJson(const EngineStats& s) {
  const auto finished = [&s](FinishReason reason) {
    return s.finished_requests[static_cast<int>(reason)];
  };
  const Histogram& ttft = s.requests.time_to_first_token;
  nlohmann::json j = {
      {"preemptions", s.preemptions},         {"generated_tokens", s.generated_tokens},
      {"prompt_tokens", s.prompt_tokens},
      {"finished_requests", finished(FinishReason::kStop) + finished(FinishReason::kLength) +
                                finished(FinishReason::kError)},
      {"aborted_requests", finished(FinishReason::kAbort)}, {"steps", s.steps},
      {"queued_requests", s.queued_requests}, {"running_sequences", s.running_sequences},
      {"kv_blocks_total", s.kv_blocks_total}, {"kv_blocks_used", s.kv_blocks_used},
      {"kv_blocks_free", s.kv_blocks_free},   {"kv_blocks_cached", s.kv_blocks_cached},
      {"prefix_cache_queries", s.prefix_cache_queries},
      {"prefix_cache_hits", s.prefix_cache_hits},
      {"mean_ttft_s", ttft.count() ? ttft.sum() / ttft.count() : 0.0},
      {"mean_tpot_s", s.requests.MeanTimePerOutputToken()},
      {"spec_proposed", s.spec_proposed},     {"spec_accepted", s.spec_accepted}};
  return j.dump();
}

// Generation on rank 0 (the only rank with one process).
int Generate(Options opt, ModelGroup& group) {
  ModelRunner& runner = group.runner();
  const ModelConfig& config = group.model().config();
  const MlaMode mode = opt.mla_mode == "naive"      ? MlaMode::kNaive
                       : opt.mla_mode == "absorbed" ? MlaMode::kAbsorbed
                                                    : MlaMode::kAuto;
  std::vector<std::string> texts = opt.prompt_ids;
  if (!opt.prompts_file.empty()) {
    auto lines = ReadPromptLines(opt.prompts_file);
    if (!lines.ok()) {
      spdlog::error("{}", std::string(lines.status().message()));
      return 2;
    }
    texts.insert(texts.end(), lines->begin(), lines->end());
  }
  if (texts.empty()) {
    spdlog::error("no prompts: give --prompt-ids or --prompts-file");
    return 2;
  }
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& text : texts) {
    auto ids = ParseIds(text, config.vocab_size);
    if (!ids.ok()) {
      spdlog::error("{}", std::string(ids.status().message()));
      return 2;
    }
    prompts.push_back(*std::move(ids));
  }
  if (!opt.logits_out.empty()) {
    if (prompts.size() != 1) {
      spdlog::error("--logits-out needs exactly one prompt");
      return 2;
    }
    auto s = WritePromptLogits(runner, prompts[0], mode, opt.logits_out);
    if (!s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 1;
    }
  }
  if (!opt.mtp_logits_out.empty()) {
    if (prompts.size() != 1) {
      spdlog::error("--mtp-logits-out needs exactly one prompt");
      return 2;
    }
    auto s = WriteMtpLogits(runner, prompts[0], mode, opt.mtp_logits_out);
    if (!s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 1;
    }
  }
  if (opt.max_new_tokens == 0) {
    for (size_t i = 0; i < prompts.size(); ++i) std::cout << "\n";
    return 0;
  }

  EngineConfig ec;
  ec.block_size = opt.block_size;
  ec.num_kv_blocks = opt.kv_blocks;
  ec.kv_memory_bytes = opt.kv_memory_mb << 20;
  ec.max_model_len = opt.max_model_len;
  if (group.backend().device() == Device::kCuda) {
    ec.gpu_memory_utilization = opt.gpu_memory_utilization;
    ec.graph_memory_bytes = opt.cuda_graph_memory_mb << 20;
  } else if (opt.kv_blocks == 0 && opt.kv_memory_mb == 0) {
    ec.kv_memory_bytes = kCpuKvMemoryMb << 20;
  }
  ec.scheduler.max_batched_tokens = opt.max_batched_tokens;
  // Unless given, seats never exceed the step budget (every running sequence decodes each step).
  ec.scheduler.max_running_seqs =
      opt.max_running_seqs > 0 ? opt.max_running_seqs : std::min(256, opt.max_batched_tokens);
  ec.max_queued_requests = std::max<int32_t>(ec.max_queued_requests, prompts.size());
  ec.max_queued_tokens = std::numeric_limits<int32_t>::max();
  ec.scheduler.speculative_tokens = opt.speculative_tokens;
  auto engine = Engine::Create(runner, /*tokenizer=*/nullptr, ec);
  if (!engine.ok()) {
    spdlog::error("{}", std::string(engine.status().message()));
    return 2;
  }
  opt.sampling.max_tokens = opt.max_new_tokens;
  if (opt.seed >= 0) opt.sampling.seed = static_cast<uint64_t>(opt.seed);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineRequest request;
    request.request_id = "prompt-" + std::to_string(i);
    request.prompt_ids = prompts[i];
    request.sampling = opt.sampling;
    request.detokenize = false;
    auto stream = (*engine)->Submit(std::move(request));
    if (!stream.ok()) {
      spdlog::error("prompt {}: {}", i, std::string(stream.status().message()));
      return 2;
    }
    streams.push_back(*std::move(stream));
  }
  int rc = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    std::vector<int32_t> generated;
    while (auto delta = streams[i]->Next()) {
      generated.insert(generated.end(), delta->token_ids.begin(), delta->token_ids.end());
      if (delta->finish_reason == FinishReason::kError) {
        spdlog::error("prompt {}: {}", i, delta->error);
        rc = 1;
      }
    }
    std::cout << absl::StrJoin(generated, " ") << "\n";
  }
  std::cout.flush();
  const EngineStats stats = (*engine)->Stats();
  (*engine)->Shutdown();
  if (opt.stats) std::cerr << StatsJson(stats) << std::endl;
  return rc;
}

int Run(Options opt) {
  ModelGroupOptions go;
  go.tp = opt.tp;
  go.node = opt.node;
  go.dp_attention = opt.dp_attention;
  go.rank_timeout = absl::Seconds(opt.rank_timeout_s);
  go.custom_all_reduce = opt.custom_all_reduce;
  go.worker_args = opt.argv;
  const std::string model = opt.model;
  return RunToolOnModelGroup(
      go, model,
      [&](int local_rank) -> absl::StatusOr<std::unique_ptr<Backend>> {
        auto backend = MakeBackend(opt.device, opt.threads, local_rank);
        if (backend.ok()) (*backend)->SetGraphMemoryLimit(opt.cuda_graph_memory_mb << 20);
        return backend;
      },
      [&](ModelGroup& group) { return Generate(std::move(opt), group); });
}

}  // namespace
}  // namespace dsv3

int main(int argc, char** argv) {
  dsv3::Options opt;
  opt.sampling.temperature = 0.0f;  // greedy unless asked otherwise
  CLI::App app{"dsv3-generate: offline DeepSeek-V3 generation from token ids"};
  app.add_option("--model", opt.model, "model directory (config.json + safetensors)")->required();
  app.add_option("--prompt-ids", opt.prompt_ids, "comma-separated token ids; repeat for more prompts");
  app.add_option("--prompts-file", opt.prompts_file,
                 "one prompt per line as comma-separated ids, all submitted at once");
  app.add_option("--max-new-tokens", opt.max_new_tokens, "tokens to generate per prompt")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--logits-out", opt.logits_out,
                 "write the prompt's logits [T, V] as float32 .npy (one prompt only)");
  app.add_option("--mtp-logits-out", opt.mtp_logits_out,
                 "write the MTP module's logits of the prompt [T-1, V] as float32 .npy (one "
                 "prompt only): row j from position j and token j+1, predicting token j+2");
  app.add_option("--speculative-tokens", opt.speculative_tokens,
                 "MTP speculative decoding: tokens drafted per sequence per step (0: off)")
      ->check(CLI::Range(0, dsv3::kMaxSpeculativeTokens));
  app.add_option("--threads", opt.threads, "CPU threads (0: all)");
  app.add_option("--device", opt.device,
                 "backend: cpu, or cuda (GPU LOCAL_RANK, or one GPU per rank with --tp; builds "
                 "with the CUDA backend)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--mla-mode", opt.mla_mode, "MLA form for --logits-out: auto, naive or absorbed")
      ->check(CLI::IsMember({"auto", "naive", "absorbed"}));
  app.add_option("--kv-blocks", opt.kv_blocks,
                 "KV cache blocks; overrides --kv-memory-mb and --gpu-memory-utilization (0: unset)");
  app.add_option("--kv-memory-mb", opt.kv_memory_mb,
                 "KV cache memory; overrides --gpu-memory-utilization (0: unset: "
                 "--gpu-memory-utilization on cuda, 1024 on cpu)");
  app.add_option("--gpu-memory-utilization", opt.gpu_memory_utilization,
                 "cuda: fraction of the GPU's memory to use; the KV cache gets what weights, peak "
                 "activations and --cuda-graph-memory-mb leave (does not apply to cpu)")
      ->check(CLI::Range(0.0, 1.0) & CLI::PositiveNumber);
  app.add_option("--cuda-graph-memory-mb", opt.cuda_graph_memory_mb,
                 "cuda: memory CUDA graphs may hold, set aside within --gpu-memory-utilization")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-model-len", opt.max_model_len,
                 "longest prompt + output per sequence (0: the model's, capped to the KV cache)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--log-format", opt.log_format, "stderr log lines: text or json")
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--block-size", opt.block_size, "tokens per KV block");
  app.add_option("--max-batched-tokens", opt.max_batched_tokens, "new tokens per engine step");
  app.add_option("--max-running-seqs", opt.max_running_seqs,
                 "sequences running at once (0: min(256, --max-batched-tokens))");
  app.add_option("--temperature", opt.sampling.temperature, "0: greedy");
  app.add_option("--top-p", opt.sampling.top_p);
  app.add_option("--top-k", opt.sampling.top_k);
  app.add_option("--min-p", opt.sampling.min_p);
  app.add_option("--repetition-penalty", opt.sampling.repetition_penalty);
  app.add_option("--presence-penalty", opt.sampling.presence_penalty);
  app.add_option("--frequency-penalty", opt.sampling.frequency_penalty);
  app.add_option("--min-tokens", opt.sampling.min_tokens);
  app.add_option("--stop-token-ids", opt.sampling.stop_token_ids, "extra stop token ids")->delimiter(',');
  app.add_option("--seed", opt.seed, "per-request seed (the same for every prompt)");
  app.add_flag("--ignore-eos", opt.sampling.ignore_eos, "keep generating after an end-of-sequence token");
  app.add_flag("--stats", opt.stats, "print the engine counters as one JSON object on stderr");
  app.add_option("--tp", opt.tp,
                 "tensor-parallel ranks in all: spawns --tp - 1 workers on this host (--tp / "
                 "--nnodes - 1 per host with --nnodes); RANK, WORLD_SIZE, MASTER_ADDR and "
                 "MASTER_PORT launch ranks externally instead")
      ->check(CLI::Range(1, 64));
  dsv3::AddNodeLaunchFlags(app, opt.node);
  app.add_flag("--dp-attention", opt.dp_attention,
               "with --tp N: data-parallel attention with expert parallelism (each rank runs "
               "its own sequences; the routed experts are split N ways)");
  app.add_option("--rank-timeout-s", opt.rank_timeout_s,
                 "seconds a step may wait for another rank before the group is declared broken");
  app.add_flag("--custom-all-reduce", opt.custom_all_reduce,
               "cuda backend with --tp: all-reduces of up to 8 MiB over peer memory (NVLink) "
               "instead of NCCL when every rank is on one host (as dsv3-server's)");
  CLI11_PARSE(app, argc, argv);
  dsv3::InstallStderrLogger("dsv3", *dsv3::ParseLogFormat(opt.log_format), spdlog::level::info);
  opt.argv.assign(argv + 1, argv + argc);
  return dsv3::Run(std::move(opt));
}
