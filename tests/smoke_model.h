// A random-weight DeepSeek-V3-architecture checkpoint with the real DeepSeek-V3 tokenizer, for
// tests that need the full 129,280-token vocabulary (the demo model's is 4,096): generated
// deterministically on first use so that the repository stays small (its vocabulary alone makes
// the embedding and the head tens of MB). Its output is varied but meaningless.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/random_model_marker.h"

namespace dsv3::testing {

// Bumped whenever the generated weights or config change, so old caches are not reused.
inline constexpr const char kSmokeModelName[] = "smoke-model-v1";

// Returns <cache_dir>/smoke-model-v1, writing it first if absent: config.json,
// model.safetensors (BF16), the tokenizer files copied from `tokenizer_dir`, and the marker
// (kRandomModelMarker) that makes dsv3-server say it serves random weights.
// The directory appears atomically (written under a temporary name, then renamed), so
// concurrent first starts are safe and a crash leaves no half-written model behind.
absl::StatusOr<std::string> EnsureSmokeModel(const std::string& cache_dir,
                                             const std::string& tokenizer_dir);

}  // namespace dsv3::testing
