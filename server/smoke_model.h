// The embedded default model: a tiny DeepSeek-V3-architecture checkpoint with random weights and
// the real DeepSeek-V3 tokenizer, generated deterministically on first use so that the
// repository stays small (its 129,280-token vocabulary alone makes the embedding and the head
// tens of MB). Its output is varied but meaningless: it exists to exercise the whole stack.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace dsv3::server {

// Bumped whenever the generated weights or config change, so old caches are not reused.
inline constexpr const char kSmokeModelName[] = "smoke-model-v1";
// A file that marks a directory as a generated smoke model.
inline constexpr const char kSmokeModelMarker[] = "dsv3_smoke_model.json";

// The cache root: $XDG_CACHE_HOME/dsv3-serve, else $HOME/.cache/dsv3-serve, else
// /tmp/dsv3-serve-cache.
std::string DefaultCacheDir();

// The tokenizer directory the build extracted (tokenizer.json, tokenizer_config.json).
std::string DefaultTokenizerDir();

// Returns <cache_dir>/smoke-model-v1, writing it first if absent: config.json,
// model.safetensors (BF16), the tokenizer files copied from `tokenizer_dir`, and the marker.
// The directory appears atomically (written under a temporary name, then renamed), so
// concurrent first starts are safe and a crash leaves no half-written model behind.
absl::StatusOr<std::string> EnsureSmokeModel(const std::string& cache_dir,
                                             const std::string& tokenizer_dir);

// True when `model_dir` holds the smoke-model marker.
bool IsSmokeModel(const std::string& model_dir);

}  // namespace dsv3::server
