// dsv3-bench --verify-tokens K (verify_bench.cc): MTP speculative decoding at DeepSeek-V3 sizes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/timing_backend.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model.h"
#include "tools/dsv3-bench/bench_util.h"

namespace dsv3 {

struct VerifyBenchOptions {
  std::vector<int> ks;       // drafts per step
  std::vector<int> batches;  // sequences per step
  int context = 1024;        // cached tokens of every sequence before the step
  int iters = 5;
  int dense_layers = 1, moe_layers = 3;  // of the bench model
  int32_t block_size = 64;
  int32_t blocks_per_sequence = 0;  // sequence s owns blocks [s * this, (s + 1) * this)
  bench::MoeFloorBytes floor;
  double copy_bw = 0;  // bytes per second
};

// Times, per batch size, a plain decode step and a verify step of K + 1 tokens per sequence
// (same contexts, CUDA graphs on), derives the MTP draft's cost, and prints markdown tables: the
// steps, their MoE layers against the HBM floor, and the effective tokens/s of speculative
// decoding for acceptance rates 0.64 (the demo model) and 0.85, for the bench model and
// extrapolated to DeepSeek-V3's 61 layers. `model` runs on `timed`, a TimingBackend around
// `gpu`. Returns the process exit code.
int RunVerifyBench(const VerifyBenchOptions& options, CudaBackend& gpu, TimingBackend& timed,
                   DeepseekV3Model& model,
                   KvCache& cache, std::FILE* out);

}  // namespace dsv3
