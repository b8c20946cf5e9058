// dsv3-bench --verify-tokens K: what MTP speculative decoding buys at DeepSeek-V3 sizes.
//
// Per batch size B (every sequence at the same context) it times, with CUDA graphs on as the
// engine runs them:
// - a plain decode step (1 new token per sequence, logits of every row);
// - a verify step of K + 1 tokens per sequence (the last token and K drafts: logits and final
//   hidden states of every row, which the engine downloads for the MTP module).
// Each step's MoE layer is set against its HBM floor, counted as the plain table counts it:
// a verify step routes B * (K + 1) tokens, so at batch 1 and K = 1 up to 16 distinct experts
// per MoE layer instead of 8.
// The MTP draft of one token per sequence is derived, not run (the random bench model has no
// MTP module): one MoE layer at batch B (the plain step's) + eh_proj (a [7168, 14336] FP8
// linear, timed here) + the plain step's head and host work (its time outside the layers).
// Speculative decoding with chained greedy acceptance a per draft makes 1 + a + ... + a^K tokens
// per sequence per step of verify + K drafts; tokens/s per user and in total, and the ratio to
// K = 0, follow for the bench model and for V3's 3 dense + 58 MoE layers (per-layer medians).
#ifdef DSV3_HAVE_CUDA_BACKEND

#include "tools/dsv3-bench/verify_bench.h"

#include <cmath>
#include <optional>
#include <string>

#include "engine/model/step_graphs.h"
#include "engine/weights/random_tensors.h"
#include "kernels/elementwise.cuh"

namespace dsv3 {

namespace {


constexpr int kV3DenseLayers = 3, kV3MoeLayers = 58;
constexpr double kAcceptance[] = {0.64, 0.85};  // the demo model's greedy rate (quality.md), a target

// B sequences of `tokens` new tokens each after `context` cached ones; every row's logits, and
// with `hidden` every row's final hidden state.
ForwardBatch UniformBatch(const VerifyBenchOptions& o, int b, int tokens, int64_t vocab,
                          bool hidden) {
  ForwardBatch fb;
  for (int s = 0; s < b; ++s) {
    std::vector<int32_t> table(o.blocks_per_sequence);
    for (int32_t i = 0; i < o.blocks_per_sequence; ++i) table[i] = s * o.blocks_per_sequence + i;
    const int32_t begin = static_cast<int32_t>(fb.token_ids.size());
    fb.sequences.push_back({begin, tokens, o.context, table});
    for (int i = 0; i < tokens; ++i) {
      fb.token_ids.push_back(static_cast<int32_t>((s * 7919 + i * 104729) % vocab));
      fb.logits_rows.push_back(begin + i);
      if (hidden) fb.hidden_rows.push_back(begin + i);
    }
  }
  return fb;
}

struct StepTiming {
  float dense = 0, moe = 0, step = 0;  // ms: per dense layer, per MoE layer, whole step
  float rest = 0;                      // the step outside its layers (embedding, head, downloads)
  double active = 0;                   // distinct routed experts per MoE layer (eager step)
  int64_t replays = 0;                 // graph replays during the timed steps
  // The step of a model with `dense` and `moe` layers.
  float StepOf(int dense_layers, int moe_layers) const {
    return dense_layers * dense + moe_layers * moe + rest;
  }
};

std::optional<StepTiming> TimeStep(const VerifyBenchOptions& o, CudaBackend& gpu,
                                   TimingBackend& timed, DeepseekV3Model& model, KvCache& cache,
                                   const ForwardBatch& fb) {
  std::vector<float> logits, hidden;
  DecodeGraphRunner runner(model);
  const std::optional<bench::StepTimes> times =
      bench::TimeSteps(gpu.stream(), timed, o.iters, o.dense_layers, o.moe_layers, [&] {
        return runner
            .Forward(fb, cache, logits, MlaMode::kAuto, fb.hidden_rows.empty() ? nullptr : &hidden)
            .ok();
      });
  if (!times) return std::nullopt;
  StepTiming timing;
  timing.replays = runner.stats().replayed;
  timing.dense = times->dense;
  timing.moe = times->moe;
  timing.step = times->step;
  timing.rest = timing.step - (o.dense_layers * timing.dense + o.moe_layers * timing.moe);
  // One eager step (op timing turns graphs off) counts the experts the batch activates.
  gpu.TakeActiveExperts();
  timed.SetOpTiming(true);
  const bool ok = model.Forward(fb, cache, logits).ok();
  timed.SetOpTiming(false);
  timed.TakeOpTimes();
  if (!ok) return std::nullopt;
  const std::vector<int64_t> active = gpu.TakeActiveExperts();
  for (int64_t a : active) timing.active += static_cast<double>(a) / active.size();
  return timing;
}

// 1 + a + a^2 + ... + a^k: expected tokens per sequence per step with chained acceptance a.
double TokensPerStep(double a, int k) {
  double tokens = 1, p = 1;
  for (int i = 0; i < k; ++i) tokens += (p *= a);
  return tokens;
}

}  // namespace

int RunVerifyBench(const VerifyBenchOptions& o, CudaBackend& gpu, TimingBackend& timed,
                   DeepseekV3Model& model,
                   KvCache& cache, std::FILE* out) {
  const ModelConfig& c = model.config();
  const int64_t h = c.hidden_size;
  std::vector<Tensor> storage;
  auto eh_proj = LoadRandomLinear(gpu, h, 2 * h, /*fp8=*/true, 0.01f, 4242, storage);
  if (!eh_proj.ok()) return 1;
  const double kv_row_bytes = c.kv_cache_dim() * 2.0;

  std::fprintf(out, "\n## Speculative decoding: verify steps of K + 1 tokens per sequence, "
               "context %d (ms, CUDA graphs on, median of %d steps)\n\n", o.context, o.iters);
  std::fprintf(out, "| batch | K | plain step | verify step | verify / plain | MoE layer plain | "
               "MoE layer verify | active experts plain / verify | HBM floor (MoE) plain / "
               "verify | MoE / floor plain / verify | MTP draft | graph replays plain / verify |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  struct Row {
    int b, k;
    StepTiming plain, verify;
    float draft;
  };
  std::vector<Row> rows;
  for (int b : o.batches) {
    const ForwardBatch plain_batch = UniformBatch(o, b, 1, c.vocab_size, false);
    const auto plain = TimeStep(o, gpu, timed, model, cache, plain_batch);
    if (!plain) return 1;
    Tensor x(gpu.allocator(), DType::kBF16, {b, 2 * h});
    Tensor y(gpu.allocator(), DType::kBF16, {b, h});
    kernels::RandomFill({x.view().data, b * 2 * h, kernels::ElemType::kBF16, 0.0f, 1.0f, 5},
                        gpu.stream());
    const float eh_ms = bench::MedianMs(gpu.stream(), [&] { gpu.Linear(x, *eh_proj, y); });
    const float draft = plain->moe + eh_ms + plain->rest;
    const double plain_kv = b * (o.context + 1.0) * kv_row_bytes;
    const double plain_floor = o.floor.FloorMs(plain->active, plain_kv, o.copy_bw);
    for (int k : o.ks) {
      const ForwardBatch verify_batch = UniformBatch(o, b, k + 1, c.vocab_size, true);
      const auto verify = TimeStep(o, gpu, timed, model, cache, verify_batch);
      if (!verify) return 1;
      const double verify_kv = b * (o.context + k + 1.0) * kv_row_bytes;
      const double verify_floor = o.floor.FloorMs(verify->active, verify_kv, o.copy_bw);
      std::fprintf(out, "| %d | %d | %.3f | %.3f | %.2fx | %.3f | %.3f | %.1f / %.1f | %.3f / %.3f "
                   "| %.2fx / %.2fx | %.3f | %lld / %lld |\n",
                   b, k, plain->step, verify->step, verify->step / plain->step, plain->moe,
                   verify->moe, plain->active, verify->active, plain_floor, verify_floor,
                   plain->moe / plain_floor, verify->moe / verify_floor, draft,
                   static_cast<long long>(plain->replays), static_cast<long long>(verify->replays));
      std::fflush(out);
      rows.push_back({b, k, *plain, *verify, draft});
    }
  }
  std::fprintf(out, "\nMTP draft = one MoE layer at the batch (the plain step's) + eh_proj "
               "([%lld, %lld] FP8, timed) + the plain step's head and host work (step minus "
               "layers). Spec step = verify + K drafts; tokens per spec step = 1 + a + ... + a^K.\n",
               static_cast<long long>(h), static_cast<long long>(2 * h));

  for (const bool v3 : {false, true}) {
    const int dense = v3 ? kV3DenseLayers : o.dense_layers, moe = v3 ? kV3MoeLayers : o.moe_layers;
    std::fprintf(out, "\n### Effective tokens/s, %s (%d dense + %d MoE layers + head)\n\n"
                 "| batch | K | a | tokens per spec step | K=0 step ms | spec step ms | tokens/s per "
                 "user K=0 | tokens/s per user | total K=0 | total | vs K=0 |\n"
                 "|---|---|---|---|---|---|---|---|---|---|---|\n",
                 v3 ? "DeepSeek-V3 extrapolated from the per-layer medians" : "bench model",
                 dense, moe);
    for (const Row& r : rows) {
      const double plain_ms = r.plain.StepOf(dense, moe);
      const double spec_ms = r.verify.StepOf(dense, moe) + r.k * r.draft;
      for (double a : kAcceptance) {
        const double tokens = TokensPerStep(a, r.k);
        const double user0 = 1e3 / plain_ms, user = tokens * 1e3 / spec_ms;
        std::fprintf(out, "| %d | %d | %.2f | %.3f | %.3f | %.3f | %.1f | %.1f | %.0f | %.0f | "
                     "%.2fx |\n", r.b, r.k, a, tokens, plain_ms, spec_ms, user0, user,
                     user0 * r.b, user * r.b, user / user0);
      }
    }
  }
  return 0;
}

}  // namespace dsv3

#endif  // DSV3_HAVE_CUDA_BACKEND
