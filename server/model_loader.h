// Loads what the flags name: the model (or the embedded smoke model), its tokenizer when there
// is one, and an engine over them on the CPU backend.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "server/server_flags.h"
#include "server/serving_state.h"

namespace dsv3::server {

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const ServerOptions& options);

// The engine configuration the flags describe.
EngineConfig EngineConfigFromFlags(const ServerOptions& options);

}  // namespace dsv3::server
