#include "engine/model/kv_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

namespace dsv3 {

namespace {

// Commits host memory now. Pages are committed on first touch, and the block pool reaches its
// blocks in the order of its free list, so without this the process would grow for as long as
// it keeps reaching blocks it never used, which looks like a leak. MADV_POPULATE_WRITE faults
// the whole pages in inside the kernel, far faster than a memset touching each page (journal
// 2026-12-02-design-measurements.md); the edges, and kernels without it (before Linux 5.14),
// get a memset. The values need not be zero: attention reads only positions that were
// written.
void CommitHostPages(void* data, size_t bytes) {
  auto* begin = static_cast<char*>(data);
  char* end = begin + bytes;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto round_down = [page](uintptr_t a) { return a & ~(page - 1); };
  char* first = reinterpret_cast<char*>(round_down(reinterpret_cast<uintptr_t>(begin) + page - 1));
  char* last = reinterpret_cast<char*>(round_down(reinterpret_cast<uintptr_t>(end)));
  if (first >= last ||
      madvise(first, static_cast<size_t>(last - first), MADV_POPULATE_WRITE) != 0) {
    std::memset(begin, 0, bytes);
    return;
  }
  std::memset(begin, 0, static_cast<size_t>(first - begin));
  std::memset(last, 0, static_cast<size_t>(end - last));
}

}  // namespace

KvCache::KvCache(Backend& backend, const ModelConfig& config, int64_t num_blocks,
                 int32_t block_size, bool mtp_layer)
    : has_mtp_layer_(mtp_layer), num_blocks_(num_blocks), block_size_(block_size) {
  const int64_t num_layers = config.num_hidden_layers + (mtp_layer ? 1 : 0);
  layers_.reserve(num_layers);
  for (int64_t l = 0; l < num_layers; ++l) {
    Tensor& t = layers_.emplace_back(backend.allocator(), backend.kv_cache_dtype(),
                                     std::initializer_list<int64_t>{num_blocks + 1, block_size,
                                                                    config.kv_cache_dim()});
    // Device memory is committed at allocation.
    if (t.view().device == Device::kCpu) {
      CommitHostPages(t.view().data, static_cast<size_t>(t.view().nbytes()));
    }
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
