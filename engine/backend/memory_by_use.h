// The device memory a GPU rank holds, split by what holds it: the model's weights, the KV cache,
// CUDA graphs, and the workspace (the rest). One split, computed here from what the backend
// reports (DeviceMemory) plus what only its owners know (the KV cache's bytes, the graph
// runner's); the startup log, /metrics (dsv3_gpu_memory_bytes{use}) and dsv3-bench show it.
// Pure arithmetic: no device calls.
#pragma once

#include <cstdint>
#include <string>

#include "engine/backend/backend.h"

namespace dsv3 {

// Bytes on one device. held is what this process took on it since its backend was created
// (DeviceMemory::free_at_start - free: the CUDA context itself is outside, as in KV sizing);
// the four uses add up to it, except when what is known exceeds it (see SplitGpuMemory).
struct GpuMemoryByUse {
  int64_t weights = 0;      // DeviceMemory::weight_bytes
  int64_t kv_cache = 0;     // the paged latent cache, its scratch block included
  // Captured graphs, their temporaries' arenas, the graph steps' plan workspace and the graph
  // runner's output buffers (DecodeGraphRunner::Stats::memory_bytes).
  int64_t cuda_graphs = 0;
  // The rest of held: the pool's reserve for the next step's activations, cuBLASLt's
  // workspace, kernels the driver loads on first use, small per-backend tables.
  int64_t workspace = 0;
  int64_t held = 0;
  int64_t device_total = 0;  // the device's memory
};

// The uses in the order every report lists them: the name of the `use` label of
// dsv3_gpu_memory_bytes, a title for people, and the field.
struct GpuMemoryUseField {
  const char* label;
  const char* title;
  int64_t GpuMemoryByUse::* bytes;
};
inline constexpr GpuMemoryUseField kGpuMemoryUses[] = {
    {"weights", "weights", &GpuMemoryByUse::weights},
    {"kv_cache", "KV cache", &GpuMemoryByUse::kv_cache},
    {"cuda_graphs", "CUDA graphs", &GpuMemoryByUse::cuda_graphs},
    {"workspace", "workspace", &GpuMemoryByUse::workspace},
};

// workspace = held - weights - kv_cache - graph_bytes, or 0 when that is negative: held is
// measured device-wide (cudaMemGetInfo), so another process freeing memory it held when this one
// started makes it read low; a gauge never goes negative for that.
GpuMemoryByUse SplitGpuMemory(const DeviceMemory& memory, int64_t kv_cache_bytes,
                              int64_t graph_bytes);

// "held 121.50 GiB of 141.00 GiB: weights 84.50 GiB, KV cache 36.38 GiB, CUDA graphs 0.00 GiB,
// workspace 0.62 GiB" (GiB with 2 decimals), for one log line.
std::string DescribeGpuMemory(const GpuMemoryByUse& memory);

}  // namespace dsv3
