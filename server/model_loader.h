// Loads what the flags name: the model (or the embedded demo model), its tokenizer when there
// is one, and an engine over them on the CPU backend.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/model_group.h"
#include "server/server_flags.h"
#include "server/serving_state.h"

namespace dsv3::server {

// The model directory the flags name: --model, or the embedded demo model (a small trained
// DeepSeek-V3-architecture model, tools/demo-model, extracted by the build). NotFound when
// neither exists.
absl::StatusOr<std::string> ResolveModelDir(const ServerOptions& options);

// Rank 0: loads the model through `group` (every rank loads its shard), the tokenizer and an
// engine over the group's runner. `progress` (may be null) follows the weight load.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const ServerOptions& options,
                                                       const std::string& model_dir,
                                                       ModelGroup& group,
                                                       LoadProgress* progress = nullptr);

// The engine configuration the flags describe for a backend on `device`: on the cpu backend
// --gpu-memory-utilization does not apply, and the KV cache takes --kv-memory-mb (default
// kCpuKvMemoryMb) unless --num-kv-blocks is set.
EngineConfig EngineConfigFromFlags(const ServerOptions& options, Device device);

// The backend --device names on GPU `local_rank`, with CUDA graphs bounded by
// --cuda-graph-memory-mb (every rank, so that the reserve KV sizing set aside holds).
absl::StatusOr<std::unique_ptr<Backend>> MakeServerBackend(const ServerOptions& options,
                                                          int local_rank);

}  // namespace dsv3::server
