// Device memory of the CUDA backend.
// - StreamAllocator: stream-ordered allocations from the device's default pool (which keeps
//   freed memory for reuse). While counting, it also sums the sizes (rounded as an arena rounds
//   them) of what it hands out: the arena a graph capture of the same ops needs.
// - ArenaAllocator: carves a fixed buffer in order; frees do nothing until Reset. The same
//   sequence of allocations gets the same addresses every time, which is what CUDA graphs need:
//   a captured graph keeps the addresses it saw (cuda_graphs.cc).
// A Tensor frees through the allocator that made it, so tensors of both kinds can be mixed.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <functional>

#include "engine/backend/tensor.h"

namespace dsv3 {

inline constexpr int64_t kDeviceAlignment = 256;
inline int64_t AlignedDeviceBytes(int64_t bytes) {
  return (std::max<int64_t>(bytes, 1) + kDeviceAlignment - 1) / kDeviceAlignment *
         kDeviceAlignment;
}

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

class ArenaAllocator final : public Allocator {
 public:
  // [base, base + size) must stay valid while tensors of this arena are used.
  ArenaAllocator(void* base, int64_t size) : base_(static_cast<char*>(base)), size_(size) {}

  // Running past the end is a sizing bug of the caller: aborts.
  void* Allocate(int64_t bytes) override;
  void Free(void*) override {}
  Device device() const override { return Device::kCuda; }

  // The next allocations start again at the beginning.
  void Reset() { used_ = 0; }
  int64_t size() const { return size_; }

 private:
  char* base_;
  int64_t size_, used_ = 0;
};

}  // namespace dsv3
