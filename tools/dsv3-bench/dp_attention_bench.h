// dsv3-bench --tp N --dp-attention (dp_attention_bench.cc): decode under data-parallel attention
// with expert parallelism at DeepSeek-V3 sizes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/timing_backend.h"
#include "engine/model/model.h"
#include "engine/parallel/communicator.h"

namespace dsv3 {

struct DpAttentionBenchOptions {
  std::vector<int> batches;  // sequences per step over all ranks
  int context = 1024;        // cached tokens of every sequence before the step
  int iters = 5;
  int dense_layers = 1, moe_layers = 3;  // of the bench model
  int32_t block_size = 64;
};

// On every rank of `comm` (the same calls on each): per global batch B, B sequences spread over
// the attention ranks as the scheduler spreads them (sequence s on rank s % N, so each rank has
// B / N, the first B % N one more), each rank's in its own KV cache; decode steps through
// ForwardDataParallel with a decode graph runner, as the server runs them, eagerly and graphed.
// Prints (on `out`, rank 0's) the per-layer and step times, tokens/s per sequence and in total,
// and rank 0's GPU memory by use. `model` is loaded with dp_attention on `timed`, a
// TimingBackend around `gpu`. Returns the process exit code.
int RunDpAttentionBench(const DpAttentionBenchOptions& options, CudaBackend& gpu,
                        TimingBackend& timed, DeepseekV3Model& model, Communicator& comm,
                        std::FILE* out);

}  // namespace dsv3
