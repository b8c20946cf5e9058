// dsv3-cpu-bench: CPU backend throughput on a checkpoint (the fixtures, or any small model).
//
//   dsv3-cpu-bench --model build/data/fixtures/tiny-fp8 [--threads N] [--repeats R]
//
// Prints a Markdown table to stdout:
//   - model prefill tokens/s for one prompt of each length, and decode tokens/s of one sequence;
//   - engine throughput (generated tokens/s) for N concurrent requests against the same N
//     requests one at a time.
// Times are the median over --repeats runs, after one warm-up.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "spdlog/spdlog.h"

namespace dsv3 {
namespace {

using Clock = std::chrono::steady_clock;

void CheckOk(const absl::Status& s) {
  if (!s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    std::exit(1);
  }
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

template <typename F>
double MedianSeconds(int repeats, F&& run) {
  run();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    run();
    t.push_back(Seconds(start, Clock::now()));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<int32_t> Prompt(int n, int64_t vocab, int salt) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = static_cast<int32_t>((i * 7919 + salt * 104729) % (vocab - 2) + 2);
  return p;
}

std::vector<int32_t> Table(int32_t blocks) {
  std::vector<int32_t> t(blocks);
  for (int32_t i = 0; i < blocks; ++i) t[i] = i;
  return t;
}

void ModelThroughput(DeepseekV3Model& model, Backend& backend, int repeats) {
  const int64_t vocab = model.config().vocab_size;
  constexpr int32_t kBlock = 64;
  std::cout << "| phase | tokens | median time | tokens/s |\n|---|---|---|---|\n";
  for (int n : {128, 512, 2048}) {
    const auto prompt = Prompt(n, vocab, n);
    KvCache cache(backend, model.config(), (n + kBlock - 1) / kBlock, kBlock);
    ForwardBatch batch;
    batch.token_ids = prompt;
    batch.sequences.push_back({0, n, 0, Table((n + kBlock - 1) / kBlock)});
    batch.logits_rows = {n - 1};
    std::vector<float> logits;
    const double s = MedianSeconds(repeats, [&] { CheckOk(model.Forward(batch, cache, logits)); });
    std::cout << absl::StrFormat("| prefill | %d | %.2f ms | %.0f |\n", n, s * 1e3, n / s);
  }
  // Decode: one token per step at context 512 (each step rewrites the same position, so the
  // context stays fixed across repeats).
  const int ctx = 512;
  KvCache cache(backend, model.config(), ctx / kBlock + 1, kBlock);
  ForwardBatch prefill;
  prefill.token_ids = Prompt(ctx, vocab, 1);
  prefill.sequences.push_back({0, ctx, 0, Table(ctx / kBlock + 1)});
  prefill.logits_rows = {ctx - 1};
  std::vector<float> logits;
  CheckOk(model.Forward(prefill, cache, logits));
  ForwardBatch step;
  step.token_ids = {5};
  step.sequences.push_back({0, 1, ctx, Table(ctx / kBlock + 1)});
  step.logits_rows = {0};
  constexpr int kSteps = 32;
  const double s = MedianSeconds(repeats, [&] {
    for (int i = 0; i < kSteps; ++i) CheckOk(model.Forward(step, cache, logits));
  });
  std::cout << absl::StrFormat("| decode, batch 1, context %d | %d | %.2f ms/token | %.0f |\n",
                               ctx, kSteps, s * 1e3 / kSteps, kSteps / s);
}

// Generated tokens per second for `n` requests submitted together (concurrent) or one after
// the other (sequential).
double EngineThroughput(DeepseekV3Model& model, int n, int prompt_len, int new_tokens,
                        bool concurrent) {
  EngineConfig c;
  c.num_kv_blocks = 4096;
  c.block_size = 64;
  c.scheduler.max_batched_tokens = 2048;
  c.scheduler.max_running_seqs = 64;
  c.scheduler.enable_prefix_caching = false;
  auto engine = Engine::Create(model, nullptr, c);
  if (!engine.ok()) {
    spdlog::error("{}", std::string(engine.status().message()));
    std::exit(1);
  }
  const int64_t vocab = model.config().vocab_size;
  auto make = [&](int i) {
    EngineRequest r;
    r.prompt_ids = Prompt(prompt_len, vocab, i + 10);
    r.sampling.temperature = 0;
    r.sampling.ignore_eos = true;
    r.sampling.max_tokens = new_tokens;
    r.detokenize = false;
    return r;
  };
  auto drain = [](RequestStream& s) {
    int64_t tokens = 0;
    while (auto d = s.Next()) tokens += static_cast<int64_t>(d->token_ids.size());
    return tokens;
  };
  const auto start = Clock::now();
  int64_t tokens = 0;
  if (concurrent) {
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < n; ++i) streams.push_back(*(*engine)->Submit(make(i)));
    for (auto& s : streams) tokens += drain(*s);
  } else {
    for (int i = 0; i < n; ++i) tokens += drain(**(*engine)->Submit(make(i)));
  }
  return tokens / Seconds(start, Clock::now());
}

}  // namespace
}  // namespace dsv3

int main(int argc, char** argv) {
  std::string model_dir;
  int threads = 0, repeats = 5, requests = 32, prompt_len = 32, new_tokens = 64;
  CLI::App app{"dsv3-cpu-bench: CPU backend and engine throughput"};
  app.add_option("--model", model_dir, "model directory")->required();
  app.add_option("--threads", threads, "CPU threads (0: all)");
  app.add_option("--repeats", repeats, "timed runs per measurement (median reported)");
  app.add_option("--requests", requests, "requests in the engine comparison");
  app.add_option("--prompt-len", prompt_len, "prompt tokens per engine request");
  app.add_option("--new-tokens", new_tokens, "generated tokens per engine request");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  dsv3::CpuBackend backend(threads);
  auto model = dsv3::DeepseekV3Model::Load(model_dir, backend);
  if (!model.ok()) {
    spdlog::error("{}", std::string(model.status().message()));
    return 1;
  }
  std::cout << "model: " << model_dir << ", threads: " << backend.pool().size() << "\n\n";
  dsv3::ModelThroughput(**model, backend, repeats);
  const double seq = dsv3::EngineThroughput(**model, requests, prompt_len, new_tokens, false);
  const double con = dsv3::EngineThroughput(**model, requests, prompt_len, new_tokens, true);
  std::cout << absl::StrFormat(
      "\n| engine: %d requests, %d prompt + %d generated tokens each | generated tokens/s |\n"
      "|---|---|\n| one at a time | %.0f |\n| all at once (continuous batching) | %.0f |\n"
      "| speed-up | %.2fx |\n",
      requests, prompt_len, new_tokens, seq, con, con / seq);
  return 0;
}
