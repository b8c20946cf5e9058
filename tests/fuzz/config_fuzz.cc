// libFuzzer target over config.json: arbitrary bytes through ModelConfig::FromJson. Besides
// crashes and sanitizer reports, it traps when a config is accepted whose sizes the loader
// would trust blindly (non-positive shape fields, a layer count past the documented limit).
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/config/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<dsv3::ModelConfig> config = dsv3::ModelConfig::FromJson(text);
  if (!config.ok()) return 0;
  const dsv3::ModelConfig& c = *config;
  if (c.hidden_size <= 0 || c.vocab_size <= 0 || c.num_hidden_layers <= 0 ||
      c.num_hidden_layers > 1024 || c.num_attention_heads <= 0 || c.kv_lora_rank <= 0) {
    __builtin_trap();
  }
  (void)c.softmax_scale();
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) (void)c.is_moe_layer(layer);
  return 0;
}
