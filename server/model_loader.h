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
// engine over the group's runner.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const ServerOptions& options,
                                                       const std::string& model_dir,
                                                       ModelGroup& group);

// The engine configuration the flags describe.
EngineConfig EngineConfigFromFlags(const ServerOptions& options);

}  // namespace dsv3::server
