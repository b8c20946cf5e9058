#include "server/model_loader.h"

#include <filesystem>

#include "engine/backend/backend_factory.h"
#include "engine/kv_sizing.h"
#include "server/random_model_marker.h"
#include "spdlog/spdlog.h"

namespace dsv3::server {

EngineConfig EngineConfigFromFlags(const ServerOptions& o, Device device) {
  EngineConfig c;
  c.block_size = o.kv_block_size;
  c.num_kv_blocks = o.num_kv_blocks;
  c.kv_memory_bytes = o.kv_memory_mb << 20;
  c.max_model_len = o.max_model_len;
  if (device == Device::kCuda) {
    c.gpu_memory_utilization = o.gpu_memory_utilization;
    c.graph_memory_bytes = o.cuda_graph_memory_mb << 20;
  } else if (o.num_kv_blocks == 0 && o.kv_memory_mb == 0) {
    c.kv_memory_bytes = kCpuKvMemoryMb << 20;
  }
  c.scheduler.max_batched_tokens = o.max_batched_tokens;
  c.scheduler.max_running_seqs = o.max_running_seqs;
  c.scheduler.enable_prefix_caching = !o.disable_prefix_cache;
  c.scheduler.speculative_tokens = o.speculative_tokens;
  c.max_queued_requests = o.max_queued_requests;
  c.max_queued_tokens = o.max_queued_tokens;
  c.stream_queue_capacity = o.stream_queue_capacity;
  return c;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeServerBackend(const ServerOptions& o,
                                                          int local_rank) {
  auto backend = MakeBackend(o.device, o.threads, local_rank);
  if (!backend.ok()) return backend.status();
  (*backend)->SetGraphMemoryLimit(o.cuda_graph_memory_mb << 20);
  return backend;
}

absl::StatusOr<std::string> ResolveModelDir(const ServerOptions& o) {
  if (!o.model_dir.empty()) return o.model_dir;
  const std::string demo = DSV3_DEFAULT_MODEL_DIR;
  if (!std::filesystem::exists(std::filesystem::path(demo) / "config.json")) {
    return absl::NotFoundError("no --model given and the embedded demo model is missing at " +
                               demo + " (the build extracts tools/demo-model/dsv3-demo-fp8.tar.xz)");
  }
  spdlog::info("no --model: serving the embedded demo model {}", demo);
  return demo;
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const ServerOptions& o,
                                                       const std::string& model_dir,
                                                       ModelGroup& group,
                                                       LoadProgress* progress) {
  auto loaded = std::make_unique<LoadedModel>();
  loaded->model_dir = model_dir;
  loaded->max_tokenize_bytes = o.max_tokenize_bytes;
  loaded->special_tokens_in_messages = o.allow_special_tokens_in_messages;
  loaded->is_smoke_model =
      std::filesystem::exists(std::filesystem::path(loaded->model_dir) / kRandomModelMarker);
  if (loaded->is_smoke_model) {
    spdlog::warn(
        "SMOKE MODEL: {} has random weights; its output is meaningless (it exercises "
        "the serving stack only)",
        loaded->model_dir);
  }

  auto backend = MakeServerBackend(o, group.local_rank());
  if (!backend.ok()) return backend.status();
  WeightLoadOptions load;
  load.progress = progress;
  if (absl::Status s = group.Load(loaded->model_dir, *std::move(backend), load); !s.ok()) {
    return s;
  }
  loaded->backend = &group.backend();
  loaded->model = &group.model();
  loaded->tensor_parallel_size = group.world_size();

  const std::string tokenizer_dir = o.tokenizer_dir.empty() ? loaded->model_dir : o.tokenizer_dir;
  if (std::filesystem::exists(std::filesystem::path(tokenizer_dir) / "tokenizer.json")) {
    auto tokenizer = Tokenizer::Load(tokenizer_dir);
    if (!tokenizer.ok()) return tokenizer.status();
    loaded->tokenizer = *std::move(tokenizer);
  } else if (!o.tokenizer_dir.empty()) {
    return absl::NotFoundError("--tokenizer " + o.tokenizer_dir + " holds no tokenizer.json");
  } else {
    spdlog::warn(
        "{} holds no tokenizer.json: token-id requests only (text requests get "
        "FAILED_PRECONDITION)",
        loaded->model_dir);
  }

  auto defaults =
      ReadServingDefaults(loaded->model_dir, tokenizer_dir, o.chat_template, o.served_model_names);
  if (!defaults.ok()) return defaults.status();
  loaded->defaults = *std::move(defaults);
  loaded->max_tokens_cap = o.default_max_tokens;
  spdlog::info("serving as '{}': {} chat template, temperature {} top_p {} by default",
               loaded->defaults.served_names.front(),
               loaded->defaults.chat_template == ChatTemplate::kR1 ? "R1" : "V3",
               loaded->defaults.sampling.temperature, loaded->defaults.sampling.top_p);

  const Device device = group.backend().device();
  if (device != Device::kCuda && o.num_kv_blocks == 0 && o.kv_memory_mb == 0) {
    spdlog::info("--gpu-memory-utilization does not apply to the {} backend: KV cache of "
                 "--kv-memory-mb {}",
                 group.backend().name(), kCpuKvMemoryMb);
  }
  auto engine = Engine::Create(group.runner(), loaded->tokenizer.get(),
                               EngineConfigFromFlags(o, device));
  if (!engine.ok()) return engine.status();
  loaded->engine = *std::move(engine);
  return loaded;
}

}  // namespace dsv3::server
