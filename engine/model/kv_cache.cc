#include "engine/model/kv_cache.h"

namespace dsv3 {

KvCache::KvCache(Backend& backend, const ModelConfig& config, int64_t num_blocks,
                 int32_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  layers_.reserve(config.num_hidden_layers);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    layers_.emplace_back(backend.allocator(), backend.kv_cache_dtype(),
                         std::initializer_list<int64_t>{num_blocks, block_size,
                                                        config.kv_cache_dim()});
  }
}

int64_t KvCache::BytesPerBlock(const ModelConfig& config, int32_t block_size, DType dtype) {
  return static_cast<int64_t>(block_size) * config.kv_cache_dim() * config.num_hidden_layers *
         DTypeSize(dtype);
}

}  // namespace dsv3
