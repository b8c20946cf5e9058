// dsv3-bench: DeepSeek-V3 layers at their real sizes with random FP8 weights on one GPU (or
// sharded over --tp GPUs).
// Reports per-layer decode time at several batch sizes (every sequence at the same context),
// each MoE layer's HBM floor (the bytes a decode step must read over the copy bandwidth
// measured in the same run), prefill throughput, and per-kernel GB/s and TFLOP/s of the FP8
// linear layers. Markdown tables on stdout (docs/perf/h200.md collects them).
#include <algorithm>
#include <cstdio>
#include <future>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"

#ifdef DSV3_HAVE_CUDA_BACKEND
#include <cuda_runtime_api.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/cuda_event_clock.h"
#include "engine/backend/memory_by_use.h"
#include "engine/backend/timing_backend.h"
#include "engine/model/model.h"
#include "engine/model/step_graphs.h"
#include "engine/parallel/gloo_communicator.h"
#include "engine/parallel/nccl/nccl_communicator.h"
#include "engine/parallel/tcp_store.h"
#include "engine/util/status_macros.h"
#include "engine/weights/random_tensors.h"
#include "kernels/elementwise.cuh"
#include "tools/dsv3-bench/bench_util.h"
#include "tools/dsv3-bench/dp_attention_bench.h"
#include "tools/dsv3-bench/kernel_trace.h"
#include "tools/dsv3-bench/verify_bench.h"

namespace dsv3 {
namespace {

using bench::Fp8Bytes;
using bench::Median;
using bench::MedianMs;

struct Args {
  int dense_layers = 1;
  int moe_layers = 3;
  int context = 1024;
  std::vector<int> batches = {1, 8, 32, 128};
  int prefill_tokens = 4096;
  int iters = 5;
  int tp = 1;
  bool dp_attention = false;  // tp > 1: data-parallel attention (dp_attention_bench.cc)
  bool custom_all_reduce = false;  // the model's small all-reduces over peer memory, not NCCL
  bool no_pdl = false;  // kernels launched without programmatic dependent launch (launch.cuh)
  bool no_fuse_shared = false;     // the shared expert apart from the grouped experts
  bool no_merge_in_w_uv = false;   // one-token decode: a combine kernel before W_UV's
  bool no_fuse_mla_query = false;  // MLA's query and inputs in three kernels, not two
  bool no_fuse_norms = false;      // residual adds and norm quantizations as kernels of their own
  bool no_grouped_chunks = false;  // decode experts' chunks of 8 rows in the same blocks
  bool no_quantize_in_w_uv = false;  // o_proj's input quantized by a kernel of its own
  bool no_fuse_align_quantize = false;  // MoeAlign and the experts' input quantization apart
  bool no_swiglu_in_gemm = false;  // prefill: gate|up in BF16, then the SiLU-gate's quantization
  int flash_parts = 0;  // the flash decode launch's parts; 0: the backend's rule
  std::vector<int> trace_batches;  // batches whose graphed step is traced per kernel
  bool trace_prefill = false;      // the prefill step (default experts path) per kernel
  // Speculative decoding (verify_bench.cc): drafts K per step; when given, only that section runs.
  std::vector<int> verify_tokens;
  std::vector<int> verify_batches = {1, 8, 32, 64};
};

std::string V3ConfigJson(const Args& a) {
  return absl::StrCat(R"({"model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": )",
                      a.dense_layers + a.moe_layers, R"(, "first_k_dense_replace": )",
                      a.dense_layers, R"(, "num_attention_heads": 128,
    "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 256, "n_shared_experts": 1,
    "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5,
    "norm_topk_prob": true, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
    "rms_norm_eps": 1e-6, "rope_theta": 10000, "max_position_embeddings": 163840,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
      "weight_block_size": [128, 128]}})");
}

// Device-to-device copy bandwidth (bytes read + written per second) over 2 GiB.
double CopyBandwidth(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 31;
  void *a = nullptr, *b = nullptr;
  cudaMalloc(&a, bytes);
  cudaMalloc(&b, bytes);
  cudaMemsetAsync(a, 1, bytes, stream);
  const float ms =
      MedianMs(stream, [&] { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms * 1e-3);
}

// A markdown table: one row per op name (in first-seen order), one column per run.
void PrintOpTable(std::FILE* out, const char* title, const std::vector<int>& columns,
                  const std::vector<std::vector<std::pair<std::string, float>>>& times) {
  std::vector<std::string> names;
  for (const auto& column : times) {
    for (const auto& [name, ms] : column) {
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
  }
  std::fprintf(out, "\n### %s\n\n| op |", title);
  for (int c : columns) std::fprintf(out, " %d |", c);
  std::fprintf(out, "\n|---|");
  for (size_t i = 0; i < columns.size(); ++i) std::fprintf(out, "---|");
  std::fprintf(out, "\n");
  for (const std::string& name : names) {
    std::fprintf(out, "| %s |", name.c_str());
    for (const auto& column : times) {
      float ms = 0;
      for (const auto& [n, t] : column) ms += n == name ? t : 0.0f;
      std::fprintf(out, " %.3f |", ms);
    }
    std::fprintf(out, "\n");
  }
}

// The device memory this rank holds by use (engine/backend/memory_by_use.h), in GiB.
void PrintMemoryByUse(std::FILE* out, const GpuMemoryByUse& m, int64_t graphs) {
  const auto gib = [](int64_t bytes) { return bytes / double(1 << 30); };
  std::fprintf(out, "\n### GPU memory by use (after the decode steps; %lld CUDA graphs held)\n\n"
               "| use | GiB |\n|---|---|\n", static_cast<long long>(graphs));
  for (const GpuMemoryUseField& use : kGpuMemoryUses) {
    std::fprintf(out, "| %s | %.2f |\n", use.title, gib(m.*use.bytes));
  }
  std::fprintf(out, "| held (total) | %.2f of %.2f on the device |\n", gib(m.held),
               gib(m.device_total));
}

// The kernels of one replayed decode step of `fb`, traced (kernel_trace.h) with a graph runner
// of its own: its first step runs eagerly, the second is captured, the third replays.
absl::StatusOr<std::vector<bench::TracedKernel>> TraceGraphedStep(DeepseekV3Model& model,
                                                                  const ForwardBatch& fb,
                                                                  KvCache& cache) {
  DSV3_ASSIGN_OR_RETURN(std::unique_ptr<bench::KernelTrace> trace, bench::KernelTrace::Start());
  DecodeGraphRunner runner(model);
  std::vector<float> logits;
  for (int step = 0; step < 3; ++step) {
    trace->Take();
    DSV3_RETURN_IF_ERROR(runner.Forward(fb, cache, logits));
  }
  if (runner.stats().replayed < 1) {
    return absl::FailedPreconditionError("the traced step was not a graph replay");
  }
  return trace->Take();
}

// One rank's whole benchmark. Every rank runs the same steps (the model's collectives meet
// inside Forward); `out` gets the tables (rank 0's; the others write to /dev/null).
int RunRank(const Args& args, CudaBackend& gpu, Communicator& comm, std::FILE* out) {
  auto config = ModelConfig::FromJson(V3ConfigJson(args), "bench config");
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  const ModelConfig& c = *config;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  const double copy_bw = CopyBandwidth(gpu.stream());
  std::fprintf(out,
               "device: %s, driver API %d, runtime %d, copy bandwidth %.2f TB/s, "
               "tensor parallel %d, programmatic dependent launch %s, shared expert %s, norms %s, "
               "grouped experts' chunks of 8 rows %s, one-token flash pieces merged by %s, "
               "MLA query %s, o_proj's input quantized by %s, flash decode parts %s, "
               "decode experts' rows aligned and quantized %s, prefill SiLU-gate quantized by "
               "%s\n",
               prop.name, driver, runtime, copy_bw / 1e12, comm.world_size(),
               args.no_pdl ? "off" : "on in decode steps",
               args.no_fuse_shared ? "apart" : "fused into the grouped experts where it pays",
               args.no_fuse_norms ? "apart"
                                  : "fused with the residual add, q_b's quantization, RoPE "
                                    "and the KV write",
               args.no_grouped_chunks ? "in the same blocks" : "as blocks of their own",
               args.no_merge_in_w_uv ? "a combine kernel" : "W_UV's kernel",
               args.no_fuse_mla_query ? "in three kernels" : "in two kernels",
               args.no_quantize_in_w_uv ? "a kernel of its own" : "W_UV's kernel",
               args.flash_parts > 0 ? std::to_string(args.flash_parts).c_str() : "by the rule",
               args.no_fuse_align_quantize ? "by two kernels" : "in one kernel",
               args.no_swiglu_in_gemm ? "a kernel of its own" : "gate|up's epilogue");

  // The model runs on a TimingBackend around the GPU: per-layer and per-op times on the GPU's
  // stream, and the GPU's choice of kernel paths and MLA's sub-steps as sections.
  TimingBackend timed(gpu, [&] { return MakeCudaEventClock(gpu.stream()); });
  gpu.SetOpSections(&timed);
  absl::Cleanup no_sections = [&] { gpu.SetOpSections(nullptr); };  // before `timed` goes
  auto model_or = DeepseekV3Model::Random(c, timed, 1234, comm, args.dp_attention);
  if (!model_or.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model_or.status().message()).c_str());
    return 1;
  }
  DeepseekV3Model& model = **model_or;
  const int32_t block = 64;
  if (args.dp_attention) {
    return RunDpAttentionBench({.batches = args.batches,
                                .context = args.context,
                                .iters = args.iters,
                                .dense_layers = args.dense_layers,
                                .moe_layers = args.moe_layers,
                                .block_size = block},
                               gpu, timed, model, comm, out);
  }
  const int max_batch = std::max(*std::max_element(args.batches.begin(), args.batches.end()),
                                 *std::max_element(args.verify_batches.begin(),
                                                   args.verify_batches.end()));
  const int max_verify =
      args.verify_tokens.empty()
          ? 0
          : *std::max_element(args.verify_tokens.begin(), args.verify_tokens.end());
  const int32_t blocks_per_seq = (args.context + 1 + max_verify + block - 1) / block;
  const int64_t num_blocks =
      std::max<int64_t>(int64_t{max_batch} * blocks_per_seq, (args.prefill_tokens + block - 1) / block);
  KvCache cache(gpu, c, num_blocks, block);
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    kernels::RandomFill({cache.layer(l).data, cache.layer(l).numel(), kernels::ElemType::kBF16,
                         0.0f, 1.0f, 99 + static_cast<uint64_t>(l)},
                        gpu.stream());
  }
  gpu.Synchronize();

  // Weight bytes a decode step reads per MoE layer, besides the routed experts.
  const double h = 7168, q_lora = 1536, nh = 128;
  // With tensor parallelism each rank holds q_a and kv_a whole, 1/tp of q_b, kv_b, o_proj and
  // the shared expert, and its own experts (the active ones are counted on this rank).
  const double tp = comm.world_size();
  const double attn_bytes = Fp8Bytes(q_lora, h) + Fp8Bytes(nh * 192, q_lora) +
                            Fp8Bytes(576, h) + Fp8Bytes(nh * 256, 512) + Fp8Bytes(h, nh * 128);
  const double rank_attn_bytes = Fp8Bytes(q_lora, h) + Fp8Bytes(576, h) +
                                 (attn_bytes - Fp8Bytes(q_lora, h) - Fp8Bytes(576, h)) / tp;
  const double expert_bytes = 3 * Fp8Bytes(2048, h);
  const double router_bytes = 256 * h * 2;
  if (!args.verify_tokens.empty()) {
    VerifyBenchOptions v;
    v.ks = args.verify_tokens;
    v.batches = args.verify_batches;
    v.context = args.context;
    v.iters = args.iters;
    v.dense_layers = args.dense_layers;
    v.moe_layers = args.moe_layers;
    v.block_size = block;
    v.blocks_per_sequence = blocks_per_seq;
    v.floor = {rank_attn_bytes, router_bytes, expert_bytes, tp};
    v.copy_bw = copy_bw;
    return RunVerifyBench(v, gpu, timed, model, cache, out);
  }

  std::fprintf(out, "\n## Decode, context %d (ms per layer, median of %d steps)\n\n", args.context,
              args.iters);
  std::fprintf(
      out,
      "| batch | dense layer | MoE layer | active experts | HBM floor (MoE) | MoE / floor |"
      " step (all layers + head) | MoE layer, no graphs | step, no graphs |"
      " tokens/s per sequence | tokens/s |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::vector<std::vector<std::pair<std::string, float>>> op_columns;  // per batch
  std::vector<std::pair<int, std::vector<bench::TracedKernel>>> traces;  // --trace-batches
  // One runner for every batch size, as in the server: the graphs of each size stay held, so
  // the memory table below shows what they take together.
  DecodeGraphRunner runner(model);
  for (int b : args.batches) {
    ForwardBatch fb;
    for (int s = 0; s < b; ++s) {
      std::vector<int32_t> table(blocks_per_seq);
      for (int32_t i = 0; i < blocks_per_seq; ++i) table[i] = s * blocks_per_seq + i;
      fb.sequences.push_back({s, 1, args.context, table});
      fb.token_ids.push_back(static_cast<int32_t>((s * 7919) % c.vocab_size));
      fb.logits_rows.push_back(s);
    }
    std::vector<float> logits;
    // With or without CUDA graphs.
    auto time_steps = [&](bool graphs) {
      gpu.SetCudaGraphs(graphs);
      return bench::TimeSteps(gpu.stream(), timed, args.iters, args.dense_layers,
                              args.moe_layers,
                              [&] { return runner.Forward(fb, cache, logits).ok(); });
    };
    const auto eager = time_steps(false);
    const auto graphed = time_steps(true);
    if (!eager || !graphed) return 1;
    if (std::find(args.trace_batches.begin(), args.trace_batches.end(), b) !=
        args.trace_batches.end()) {
      auto kernels = TraceGraphedStep(model, fb, cache);
      if (kernels.ok()) {
        traces.emplace_back(b, *std::move(kernels));
      } else {
        std::fprintf(stderr, "no kernel trace at batch %d: %s\n", b,
                     std::string(kernels.status().message()).c_str());
      }
    }
    // One more step with every op timed (eager: events around each op perturb the totals
    // above), which also counts the experts the batch activates (graphs do not log them).
    gpu.TakeActiveExperts();
    timed.SetOpTiming(true);
    if (!model.Forward(fb, cache, logits).ok()) return 1;
    op_columns.push_back(timed.TakeOpTimes());
    timed.SetOpTiming(false);
    const double mean_active = bench::Mean(gpu.TakeActiveExperts());
    const double kv_bytes = static_cast<double>(b) * (args.context + 1) * 576 * 2;
    const double floor_ms = bench::MoeFloorBytes{rank_attn_bytes, router_bytes, expert_bytes, tp}
                                .FloorMs(mean_active, kv_bytes, copy_bw);
    // Decode throughput of this model (its layers and head) from the graphed step.
    const double per_sequence = 1e3 / graphed->step;
    std::fprintf(out,
                 "| %d | %.3f | %.3f | %.1f | %.3f | %.2fx | %.3f | %.3f | %.3f | %.1f | %.0f |\n",
                 b, graphed->dense, graphed->moe, mean_active, floor_ms, graphed->moe / floor_ms,
                 graphed->step, eager->moe, eager->step, per_sequence, b * per_sequence);
    std::fflush(out);
  }
  PrintOpTable(out, "Decode: time per op in one step (ms, all layers and the head)",
               args.batches, op_columns);
  for (const auto& [b, kernels] : traces) {
    bench::PrintKernelTrace(
        out, absl::StrCat("Decode: the kernels of one graphed step at batch ", b, " (CUPTI)"),
        kernels);
  }
  PrintMemoryByUse(out, SplitGpuMemory(*gpu.MemoryInfo(), cache.bytes(),
                                       runner.stats().memory_bytes),
                   runner.stats().graphs);

  // Prefill: one sequence of prefill_tokens tokens.
  {
    const int32_t n = args.prefill_tokens;
    ForwardBatch fb;
    std::vector<int32_t> table((n + block - 1) / block);
    for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
    fb.sequences.push_back({0, n, 0, table});
    for (int32_t i = 0; i < n; ++i) fb.token_ids.push_back((i * 104729) % c.vocab_size);
    fb.logits_rows = {n - 1};
    std::vector<float> logits;
    // Mean MoE-layer milliseconds over two steps after a warm-up; `active`: the mean number of
    // experts a MoE layer of those steps routed rows to.
    auto moe_layer_ms = [&](double& active) -> float {
      std::vector<std::vector<float>> per_layer(c.num_hidden_layers + 1);
      std::vector<int64_t> counts;
      for (int it = 0; it < 3; ++it) {
        timed.SetLayerTiming(true);
        if (!model.Forward(fb, cache, logits).ok()) return -1;
        const auto times = timed.LayerTimes();
        const std::vector<int64_t> step_counts = gpu.TakeActiveExperts();
        if (it == 0) continue;
        counts.insert(counts.end(), step_counts.begin(), step_counts.end());
        for (const auto& [layer, t] : times) {
          per_layer[layer < 0 ? c.num_hidden_layers : layer].push_back(t);
        }
      }
      timed.SetLayerTiming(false);
      active = bench::Mean(counts);
      float moe = 0;
      for (int l = args.dense_layers; l < c.num_hidden_layers; ++l) {
        moe += Median(per_layer[l]) / args.moe_layers;
      }
      return moe;
    };
    const double t = n;
    const double attn_flops = 2 * t * attn_bytes /* ~ parameters: one byte each */ +
                              2 * t * 512 * nh * 256 /* K/V up-projection */ +
                              2 * (t * t / 2) * nh * (192 + 128);
    const double moe_flops = 2 * t * 9 * 3 * h * 2048 + 2 * t * 256 * h;
    // Every active expert's weights are read at least once per MoE layer: their bytes at the
    // copy bandwidth are a floor under the experts' GEMMs.
    std::fprintf(out, "\n## Prefill, %d tokens (one sequence)\n\n| experts by | MoE layer ms | "
                 "tokens/s per MoE layer | effective TFLOP/s (attention + MoE) | active experts | "
                 "their weights at copy bandwidth, ms |\n|---|---|---|---|---|---|\n", n);
    const std::pair<const char*, int64_t> paths[] = {
        {"tiled grouped FP8 GEMMs (default above 256 tokens)",
         CudaBackend::kDefaultGroupedMoeMaxTokens},
        {"decode's small-M grouped kernel", int64_t{1} << 40}};
    std::vector<std::vector<std::pair<std::string, float>>> prefill_ops;  // per path
    for (const auto& [label, max_tokens] : paths) {
      gpu.SetGroupedMoeMaxTokens(max_tokens);
      double active = 0;
      const float moe = moe_layer_ms(active);
      if (moe < 0) return 1;
      std::fprintf(out, "| %s | %.2f | %.0f | %.1f | %.1f | %.2f |\n", label, moe,
                   t / (moe * 1e-3), (attn_flops + moe_flops) / (moe * 1e-3) / 1e12, active,
                   active * expert_bytes / copy_bw * 1e3);
      timed.SetOpTiming(true);
      if (!model.Forward(fb, cache, logits).ok()) return 1;
      prefill_ops.push_back(timed.TakeOpTimes());
      timed.SetOpTiming(false);
      gpu.TakeActiveExperts();
    }
    gpu.SetGroupedMoeMaxTokens(CudaBackend::kDefaultGroupedMoeMaxTokens);
    std::fprintf(out, "\nColumns of the next table: experts by the tiled grouped GEMMs (0), by "
                 "decode's small-M grouped kernel (1).\n");
    PrintOpTable(out, "Prefill: time per op in one step (ms, all layers and the head)", {0, 1},
                 prefill_ops);
    if (args.trace_prefill) {
      // Prefill steps run eagerly: the trace is of one plain step, after the ones above.
      auto trace = bench::KernelTrace::Start();
      if (!trace.ok() || !model.Forward(fb, cache, logits).ok()) {
        std::fprintf(stderr, "no prefill kernel trace: %s\n",
                     trace.ok() ? "the step failed" : trace.status().ToString().c_str());
      } else {
        bench::PrintKernelTrace(
            out, absl::StrCat("Prefill: the kernels of one step of ", n, " tokens (CUPTI)"),
            (*trace)->Take());
      }
      gpu.TakeActiveExperts();
    }
  }

  if (comm.rank() != 0) return 0;
  // Per kernel: the FP8 linear layers of a layer at decode and prefill sizes.
  std::fprintf(out, "\n## FP8 linear (cuBLASLt block scaling, with activation quantization)\n\n"
              "| N x K | M | us | GB/s | TFLOP/s |\n|---|---|---|---|---|\n");
  const std::pair<int64_t, int64_t> shapes[] = {{1536, 7168}, {24576, 1536}, {576, 7168},
                                                {7168, 16384}, {2048, 7168}, {7168, 2048}};
  std::vector<Tensor> storage;
  for (auto [n, k] : shapes) {
    auto w = LoadRandomLinear(gpu, n, k, /*fp8=*/true, 0.01f, n * 31 + k, storage);
    if (!w.ok()) return 1;
    for (int64_t m : {1, 32, 128, 4096}) {
      Tensor x(gpu.allocator(), DType::kBF16, {m, k});
      Tensor y(gpu.allocator(), DType::kBF16, {m, n});
      kernels::RandomFill({x.view().data, m * k, kernels::ElemType::kBF16, 0.0f, 1.0f, 7}, gpu.stream());
      const double sec = MedianMs(gpu.stream(), [&] { gpu.Linear(x, *w, y); }) * 1e-3;
      const double bytes = Fp8Bytes(n, k) + m * k * 2.0 + m * n * 2.0;
      std::fprintf(out, "| %ld x %ld | %ld | %.1f | %.0f | %.1f |\n", n, k, m, sec * 1e6, bytes / sec / 1e9,
                  2.0 * m * n * k / sec / 1e12);
    }
  }
  return 0;
}

// --tp N: N ranks as threads of this process, rank r on GPU r, joined by gloo (control) and NCCL
// (the model's collectives) as in a --tp launch of the server.
int Run(const Args& args) {
  std::vector<int> rc(args.tp, 1);
  std::promise<int> port;
  std::shared_future<int> port_future = port.get_future().share();
  auto rank_main = [&](int rank) {
    bool port_sent = false;  // rank 0: the others wait for the store's port, or for -1
    auto fail = [&](const absl::Status& s) {
      std::fprintf(stderr, "rank %d: %s\n", rank, std::string(s.message()).c_str());
      if (rank == 0 && !port_sent) port.set_value(-1);
    };
    CudaBackend::Options options;
    options.device = rank;
    options.programmatic_launch = !args.no_pdl;
    options.fuse_shared_expert = !args.no_fuse_shared;
    options.merge_in_w_uv = !args.no_merge_in_w_uv;
    options.fuse_mla_query = !args.no_fuse_mla_query;
    options.fuse_norms = !args.no_fuse_norms;
    options.grouped_chunks = !args.no_grouped_chunks;
    options.quantize_in_w_uv = !args.no_quantize_in_w_uv;
    options.flash_decode_parts = args.flash_parts;
    options.fuse_moe_align_quantize = !args.no_fuse_align_quantize;
    options.swiglu_in_grouped_gemm = !args.no_swiglu_in_gemm;
    auto gpu = CudaBackend::Create(options);
    if (!gpu.ok()) return fail(gpu.status());
    if (args.tp == 1) {
      rc[rank] = RunRank(args, **gpu, SingleRankCommunicator::Instance(), stdout);
      return;
    }
    const int master_port = rank == 0 ? 0 : port_future.get();
    if (master_port < 0) return;
    auto store = TcpStore::Create({.host = "127.0.0.1", .port = master_port, .is_server = rank == 0});
    if (!store.ok()) return fail(store.status());
    if (rank == 0) {
      port.set_value((*store)->port());
      port_sent = true;
    }
    auto host = GlooCommunicator::Create(**store, {.rank = rank, .world_size = args.tp,
                                                    .timeout = absl::Minutes(10)});
    if (!host.ok()) return fail(host.status());
    auto nccl = CreateNcclCommunicator(store->get(), **host,
                                       {.local_rank = rank,
                                        .cuda_stream = (*gpu)->stream(),
                                        .custom_all_reduce = args.custom_all_reduce});
    if (!nccl.ok()) return fail(nccl.status());
    std::FILE* out = rank == 0 ? stdout : std::fopen("/dev/null", "w");
    rc[rank] = RunRank(args, **gpu, **nccl, out);
    if (rank != 0) std::fclose(out);
    (*host)->Barrier().IgnoreError();  // no rank tears NCCL down while another still runs
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < args.tp; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  return *std::max_element(rc.begin(), rc.end());
}

}  // namespace
}  // namespace dsv3
#endif

int main(int argc, char** argv) {
  CLI::App app{"dsv3-bench: DeepSeek-V3 layers at real sizes with random FP8 weights"};
#ifdef DSV3_HAVE_CUDA_BACKEND
  dsv3::Args args;
  app.add_option("--dense-layers", args.dense_layers, "dense layers (first)");
  app.add_option("--moe-layers", args.moe_layers, "MoE layers");
  app.add_option("--context", args.context, "context length of every decode sequence");
  app.add_option("--batches", args.batches, "decode batch sizes");
  app.add_option("--prefill-tokens", args.prefill_tokens, "prefill length");
  app.add_option("--iters", args.iters, "timed decode steps per batch size");
  app.add_option("--verify-tokens", args.verify_tokens,
                 "speculative decoding: K values (drafts per step) whose verify steps of K + 1 "
                 "tokens per sequence to time against a plain step (only this section runs)")
      ->delimiter(',')
      ->check(CLI::Range(1, 15));
  app.add_option("--verify-batches", args.verify_batches, "batch sizes of --verify-tokens")
      ->delimiter(',');
  app.add_option("--trace-batches", args.trace_batches,
                 "decode batch sizes whose graphed step is listed kernel by kernel (CUPTI)");
  app.add_flag("--trace-prefill", args.trace_prefill,
               "list the prefill step kernel by kernel (CUPTI)");
  app.add_flag(
      "--no-fuse-shared", args.no_fuse_shared,
      "run the shared expert apart instead of as one more grouped expert (to measure what the "
      "fusion gives)");
  app.add_flag("--no-merge-in-w-uv", args.no_merge_in_w_uv,
               "one-token decode steps: a combine kernel merges the flash decode kernel's splits "
               "before W_UV's kernel instead of W_UV's kernel merging them (to measure what the "
               "merge gives)");
  app.add_flag("--no-fuse-mla-query", args.no_fuse_mla_query,
               "decode steps: MLA's latent inputs (norm, RoPE, cache write) after q_b's GEMM and "
               "q_pe's RoPE in their own kernel instead of in q_a's norm kernel and q_b's GEMM "
               "(to measure what the fusion gives)");
  app.add_flag("--no-fuse-norms", args.no_fuse_norms,
               "run the residual adds, the quantization of q_b's input, RoPE and the KV write "
               "as kernels of their own instead of inside the norms (to measure what the "
               "fusion gives)");
  app.add_flag("--no-quantize-in-w-uv", args.no_quantize_in_w_uv,
               "decode steps: a quantization kernel between W_UV's and o_proj's instead of W_UV's "
               "kernel quantizing its output for o_proj (to measure what the fusion gives)");
  app.add_flag("--no-grouped-chunks", args.no_grouped_chunks,
               "decode experts of more than 8 rows each: their chunks of 8 rows one after "
               "another in the same blocks instead of as blocks of their own (to measure what "
               "the chunks give)");
  app.add_flag("--no-fuse-align-quantize", args.no_fuse_align_quantize,
               "decode experts: MoeAlign, then a quantization kernel, instead of one kernel "
               "doing both (to measure what the fusion gives)");
  app.add_flag("--no-swiglu-in-gemm", args.no_swiglu_in_gemm,
               "prefill experts: gate|up in BF16, then the SiLU-gate's quantization kernel, "
               "instead of gate|up's launch writing down's quantized input (to measure what "
               "the fusion gives)");
  app.add_option("--flash-parts", args.flash_parts,
                 "decode attention: cut the flash decode launch's keys into this many parts "
                 "instead of the rule's choice (to measure the rule in the model)")
      ->check(CLI::Range(1, 256));
  app.add_flag(
      "--no-pdl", args.no_pdl,
      "launch the kernels without programmatic dependent launch (to measure what it gives)");
  app.add_option("--tp", args.tp, "tensor-parallel ranks (threads, one GPU each)")
      ->check(CLI::Range(1, 8));
  app.add_flag("--dp-attention", args.dp_attention,
               "with --tp N: decode steps under data-parallel attention with expert parallelism "
               "(each rank its own sequences of the global --batches; only this section runs)");
  app.add_flag("--custom-all-reduce", args.custom_all_reduce,
               "with --tp: the model's all-reduces of up to 8 MiB over peer memory (NVLink) "
               "instead of NCCL, as dsv3-server --custom-all-reduce");
  CLI11_PARSE(app, argc, argv);
  if (args.dp_attention && args.tp < 2) {
    std::fprintf(stderr, "dsv3-bench: --dp-attention needs --tp 2 or more\n");
    return 2;
  }
  return dsv3::Run(args);
#else
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr, "dsv3-bench: built without the CUDA backend (no nvcc at configure time)\n");
  return 1;
#endif
}
