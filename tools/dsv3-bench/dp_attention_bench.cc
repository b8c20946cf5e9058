// dsv3-bench --tp N --dp-attention: each rank runs attention for its own sequences with the
// attention, dense and shared weights whole, and owns 1/N of the routed experts (the MoE layers
// exchange tokens with the experts' owners: engine/model/expert_parallel_moe.h). Against
// `dsv3-bench --tp N` at the same global batch this shows what issue 16 asks of it: the step
// time and tokens/s at the large batches where data-parallel attention pays (every rank reads
// its attention weights whole but its KV cache holds only its own sequences).
#ifdef DSV3_HAVE_CUDA_BACKEND

#include "tools/dsv3-bench/dp_attention_bench.h"

#include <algorithm>
#include <optional>

#include "engine/backend/memory_by_use.h"
#include "engine/data_parallel_forward.h"
#include "engine/model/kv_cache.h"
#include "engine/model/step_graphs.h"
#include "kernels/elementwise.cuh"
#include "tools/dsv3-bench/bench_util.h"

namespace dsv3 {
namespace {

// B decode sequences over `ranks` attention ranks, sequence s on rank s % ranks in its rank's
// blocks [slot * blocks_per_sequence, ...), slot = s / ranks.
ForwardBatch SpreadBatch(int b, int ranks, int context, int32_t blocks_per_sequence,
                         int64_t vocab) {
  ForwardBatch fb;
  for (int s = 0; s < b; ++s) {
    const int32_t slot = s / ranks;
    std::vector<int32_t> table(blocks_per_sequence);
    for (int32_t i = 0; i < blocks_per_sequence; ++i) table[i] = slot * blocks_per_sequence + i;
    fb.sequences.push_back({.token_begin = s,
                            .num_tokens = 1,
                            .context_begin = context,
                            .block_table = table,
                            .attention_rank = s % ranks});
    fb.token_ids.push_back(static_cast<int32_t>((s * 7919) % vocab));
    fb.logits_rows.push_back(s);
  }
  return fb;
}

}  // namespace

int RunDpAttentionBench(const DpAttentionBenchOptions& o, CudaBackend& gpu, TimingBackend& timed,
                        DeepseekV3Model& model, Communicator& comm, std::FILE* out) {
  const int ranks = comm.world_size();
  const int max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  const int32_t blocks_per_sequence = (o.context + 1 + o.block_size - 1) / o.block_size;
  const int per_rank = (max_batch + ranks - 1) / ranks;
  KvCache cache(gpu, model.config(), int64_t{per_rank} * blocks_per_sequence, o.block_size);
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    kernels::RandomFill({cache.layer(l).data, cache.layer(l).numel(), kernels::ElemType::kBF16,
                         0.0f, 1.0f, 99 + static_cast<uint64_t>(l)},
                        gpu.stream());
  }
  gpu.Synchronize();

  std::fprintf(out,
               "\n## Decode under data-parallel attention with expert parallelism, %d ranks, "
               "context %d (ms, median of %d steps)\n\n"
               "| batch (all ranks) | sequences per rank | dense layer | MoE layer | step, graphed "
               "| step, no graphs | tokens/s per sequence | tokens/s |\n"
               "|---|---|---|---|---|---|---|---|\n",
               ranks, o.context, o.iters);
  DecodeGraphRunner runner(model);  // one for every batch, as in the server
  for (int b : o.batches) {
    const ForwardBatch fb =
        SpreadBatch(b, ranks, o.context, blocks_per_sequence, model.config().vocab_size);
    std::vector<float> logits;
    auto time_steps = [&](bool graphs) {
      gpu.SetCudaGraphs(graphs);
      return bench::TimeSteps(gpu.stream(), timed, o.iters, o.dense_layers, o.moe_layers, [&] {
        return ForwardDataParallel(model, &runner, comm, fb, cache, logits).ok();
      });
    };
    const std::optional<bench::StepTimes> eager = time_steps(false);
    const std::optional<bench::StepTimes> graphed = time_steps(true);
    if (!eager || !graphed) {
      std::fprintf(stderr, "rank %d: a data-parallel decode step at batch %d failed\n",
                   comm.rank(), b);
      return 1;
    }
    const double per_sequence = 1e3 / graphed->step;
    std::fprintf(out, "| %d | %d | %.3f | %.3f | %.3f | %.3f | %.1f | %.0f |\n", b,
                 (b + ranks - 1) / ranks, graphed->dense, graphed->moe, graphed->step,
                 eager->step, per_sequence, b * per_sequence);
    std::fflush(out);
  }
  const GpuMemoryByUse memory =
      SplitGpuMemory(*gpu.MemoryInfo(), cache.bytes(), runner.stats().memory_bytes);
  const auto gib = [](int64_t bytes) { return bytes / double(1 << 30); };
  std::fprintf(out, "\nRank 0's GPU memory by use (GiB):");
  for (const GpuMemoryUseField& use : kGpuMemoryUses) {
    std::fprintf(out, " %s %.2f;", use.title, gib(memory.*use.bytes));
  }
  std::fprintf(out, " held %.2f of %.2f.\n", gib(memory.held), gib(memory.device_total));
  return 0;
}

}  // namespace dsv3

#endif  // DSV3_HAVE_CUDA_BACKEND
