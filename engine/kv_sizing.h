// How the engine sizes its KV cache and its context limit (EngineConfig), and the flags of
// dsv3-server and dsv3-generate that set them; every error names those flags.
//
// The pool's size, first rule that applies:
//   num_kv_blocks > 0                 exactly that many blocks               --num-kv-blocks
//   kv_memory_bytes > 0               that many bytes                        --kv-memory-mb
//   gpu_memory_utilization F > 0      what is left of F x the device's memory --gpu-memory-utilization
//                                     after weights, workspaces, the peak activations of a dummy
//                                     step at the largest batch, and the CUDA graph reserve
// The context limit (max_model_len): given, it must fit max_position_embeddings and the pool
// (one sequence may hold every block); not given, max_position_embeddings capped to the pool,
// with a warning when capped.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"

namespace dsv3 {

struct EngineConfig;
class ModelRunner;

// The KV cache (per rank) of a backend without device memory to size by (the cpu backend) when
// neither --kv-memory-mb nor --num-kv-blocks is given.
inline constexpr int64_t kCpuKvMemoryMb = 1024;

// The flag (and its value) that sized the pool under `config`, for messages:
// "--num-kv-blocks 16", "--kv-memory-mb 1024" or "--gpu-memory-utilization 0.9".
std::string KvSizingFlag(const EngineConfig& config);

// The context limit: config.max_model_len when set (InvalidArgument naming --max-model-len and
// the KV flag when it exceeds `max_position_embeddings` or `kv_capacity_tokens`), else the
// smaller of the two; `warning` gets a message naming --max-model-len and the KV flag when the
// capacity capped it (else it is cleared).
absl::StatusOr<int64_t> ResolveMaxModelLen(const EngineConfig& config,
                                           int64_t max_position_embeddings,
                                           int64_t kv_capacity_tokens, std::string* warning);

// What the --gpu-memory-utilization arithmetic starts from, in bytes. "Ours" is what this process
// took on the device after its CUDA context existed (the context itself and other processes are
// outside the budget, as in vLLM: the fraction is a per-instance limit).
struct GpuMemoryUse {
  int64_t total = 0;             // the device's memory
  int64_t free_at_start = 0;     // free when the backend was created
  int64_t ours = 0;              // held now: weights, workspaces, caches made by the profile
  int64_t activation_peak = 0;   // the profiled step's temporaries (pool high-water mark)
  int64_t graph_reserve = 0;     // CUDA graphs' bound (--cuda-graph-memory-mb)
};

// The KV cache's bytes: F x total - ours - activation_peak - graph_reserve. InvalidArgument
// naming --gpu-memory-utilization when F x total is more than was free at start (other
// processes hold the rest) or when nothing is left for the cache.
absl::StatusOr<int64_t> KvBytesForGpuMemory(double fraction, const GpuMemoryUse& use);

// Sizes the pool by config.gpu_memory_utilization on `runner`'s device: runs a dummy prefill of
// min(max_batched_tokens, the context limit) tokens and a dummy decode of max_running_seqs
// sequences on a small temporary cache, measures the pool's peak, releases the cache, and
// returns the blocks (of config.block_size, with the MTP layer when `mtp_layer`) that fit, with
// `use` filled for the startup log. FailedPrecondition when the backend reports no device memory.
absl::StatusOr<int64_t> KvBlocksForGpuMemory(ModelRunner& runner, const EngineConfig& config,
                                             bool mtp_layer, GpuMemoryUse* use);

}  // namespace dsv3
