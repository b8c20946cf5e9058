// Device memory of the CUDA backend: stream-ordered allocations from the device's default pool
// (which keeps freed memory for reuse). While counting, it also sums the sizes (rounded as an
// ArenaAllocator rounds them) of what it hands out: the arena a graph capture of the same ops
// needs (cuda_graphs.cc). A Tensor frees through the allocator that made it, so pool and arena
// tensors can be mixed.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>

#include "engine/backend/arena_allocator.h"
#include "engine/backend/tensor.h"

namespace dsv3 {

class StreamAllocator final : public Allocator {
 public:
  // `on_free` runs before a block goes back to the pool (caches keyed by address forget it).
  StreamAllocator(cudaStream_t stream, std::function<void(void*)> on_free)
      : stream_(stream), on_free_(std::move(on_free)) {}

  void* Allocate(int64_t bytes) override;
  void Free(void* p) override;
  Device device() const override { return Device::kCuda; }

  void StartCounting() { counted_ = 0, counting_ = true; }
  // The arena bytes of the allocations since StartCounting.
  int64_t StopCounting() {
    counting_ = false;
    return counted_;
  }

 private:
  cudaStream_t stream_;
  std::function<void(void*)> on_free_;
  bool counting_ = false;
  int64_t counted_ = 0;
};

}  // namespace dsv3
