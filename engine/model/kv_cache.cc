#include "engine/model/kv_cache.h"

#include <cstring>

namespace dsv3 {

KvCache::KvCache(Backend& backend, const ModelConfig& config, int64_t num_blocks,
                 int32_t block_size, bool mtp_layer)
    : has_mtp_layer_(mtp_layer), num_blocks_(num_blocks), block_size_(block_size) {
  const int64_t num_layers = config.num_hidden_layers + (mtp_layer ? 1 : 0);
  layers_.reserve(num_layers);
  for (int64_t l = 0; l < num_layers; ++l) {
    Tensor& t = layers_.emplace_back(backend.allocator(), backend.kv_cache_dtype(),
                                     std::initializer_list<int64_t>{num_blocks + 1, block_size,
                                                                    config.kv_cache_dim()});
    // Host memory is committed page by page on first touch: without this the process would
    // grow for as long as the block pool keeps reaching blocks it never used (the pool cycles
    // through its free list), which looks like a leak. Device memory is committed at allocation.
    if (t.view().device == Device::kCpu) std::memset(t.view().data, 0, t.view().nbytes());
  }
}

int64_t KvCache::bytes() const {
  int64_t total = 0;
  for (const Tensor& t : layers_) total += t.view().nbytes();
  return total;
}

int64_t KvCache::BytesPerBlock(const ModelConfig& config, int32_t block_size, DType dtype,
                               bool mtp_layer) {
  return static_cast<int64_t>(block_size) * config.kv_cache_dim() *
         (config.num_hidden_layers + (mtp_layer ? 1 : 0)) * DTypeSize(dtype);
}

}  // namespace dsv3
