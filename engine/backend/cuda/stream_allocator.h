// Device memory of the CUDA backend: stream-ordered allocations from the device's default pool
// (which keeps freed memory for reuse). While counting, it also places what it hands out and
// frees on a StackLayout, as an ArenaAllocator would: the peak is the arena a graph capture of
// the same ops needs (cuda_step_graphs.cc). A Tensor frees through the allocator that made it,
// so pool and arena tensors can be mixed.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <unordered_map>

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

  void StartCounting() {
    layout_.Reset();
    offsets_.clear();
    counting_ = true;
  }
  // The arena bytes the calls since StartCounting needed at most at once.
  int64_t StopCounting() {
    counting_ = false;
    offsets_.clear();
    return layout_.peak();
  }

 private:
  cudaStream_t stream_;
  std::function<void(void*)> on_free_;
  bool counting_ = false;
  StackLayout layout_;
  std::unordered_map<void*, int64_t> offsets_;  // blocks made while counting -> their offsets
};

}  // namespace dsv3
