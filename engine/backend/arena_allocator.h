// An allocator that carves a fixed buffer in order; frees do nothing until Reset. The same
// sequence of allocations gets the same addresses every time, which is what CUDA graphs need: a
// captured graph keeps the addresses it saw (engine/backend/cuda/cuda_graphs.cc). Host logic
// only: the buffer may be device memory or, in tests, host memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "engine/backend/tensor.h"

namespace dsv3 {

// Allocation granularity of device memory (cudaMalloc aligns to at least this).
inline constexpr int64_t kDeviceAlignment = 256;
inline int64_t AlignedDeviceBytes(int64_t bytes) {
  return (std::max<int64_t>(bytes, 1) + kDeviceAlignment - 1) / kDeviceAlignment *
         kDeviceAlignment;
}

class ArenaAllocator final : public Allocator {
 public:
  // [base, base + size) must stay valid while tensors of this arena are used; base aligned to
  // kDeviceAlignment.
  ArenaAllocator(void* base, int64_t size, Device device)
      : base_(static_cast<char*>(base)), size_(size), device_(device) {}

  // Running past the end is a sizing bug of the caller: aborts.
  void* Allocate(int64_t bytes) override {
    const int64_t aligned = AlignedDeviceBytes(bytes);
    if (used_ + aligned > size_) {
      std::fprintf(stderr, "arena of %lld bytes exhausted (%lld more wanted)\n",
                   static_cast<long long>(size_), static_cast<long long>(aligned));
      std::abort();
    }
    void* p = base_ + used_;
    used_ += aligned;
    return p;
  }
  void Free(void*) override {}
  Device device() const override { return device_; }

  // The next allocations start again at the beginning.
  void Reset() { used_ = 0; }
  int64_t size() const { return size_; }
  int64_t used() const { return used_; }

 private:
  char* base_;
  int64_t size_, used_ = 0;
  Device device_;
};

}  // namespace dsv3
