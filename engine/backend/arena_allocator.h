// Allocators that give a repeated sequence of allocations and frees the same addresses every
// time, which is what CUDA graphs need: a captured graph keeps the addresses it saw
// (engine/model/step_graphs.h). A whole step frees most of its temporaries layer by layer, so
// memory is reused in stack order: a free pops the top (and every freed block under it); a
// block freed under a live one is reused once the blocks above it go. Host logic only: the
// buffer may be device memory or, in tests, host memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "engine/backend/tensor.h"

namespace dsv3 {

// Allocation granularity of device memory (cudaMalloc aligns to at least this).
inline constexpr int64_t kDeviceAlignment = 256;
inline int64_t AlignedDeviceBytes(int64_t bytes) {
  return (std::max<int64_t>(bytes, 1) + kDeviceAlignment - 1) / kDeviceAlignment *
         kDeviceAlignment;
}

// The offsets a stack allocator hands out, and the most it ever held (what a buffer for the
// same sequence of calls needs). StreamAllocator replays a measured run's calls on one to size
// a capture arena; ArenaAllocator places its blocks with one.
class StackLayout {
 public:
  // Offset of a new block of AlignedDeviceBytes(bytes) on top of the stack.
  int64_t Push(int64_t bytes) {
    const int64_t offset = top_;
    top_ += AlignedDeviceBytes(bytes);
    peak_ = std::max(peak_, top_);
    blocks_.push_back({offset, false});
    return offset;
  }
  // Frees the block at `offset` (one Push returned); the top shrinks past every freed block.
  void Pop(int64_t offset) {
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) {
      if (it->offset == offset && !it->freed) {
        it->freed = true;
        break;
      }
    }
    while (!blocks_.empty() && blocks_.back().freed) {
      top_ = blocks_.back().offset;
      blocks_.pop_back();
    }
  }
  void Reset() { blocks_.clear(), top_ = 0, peak_ = 0; }
  int64_t top() const { return top_; }
  int64_t peak() const { return peak_; }

 private:
  struct Block {
    int64_t offset;
    bool freed;
  };
  std::vector<Block> blocks_;
  int64_t top_ = 0, peak_ = 0;
};

class ArenaAllocator final : public Allocator {
 public:
  // [base, base + size) must stay valid while tensors of this arena are used; base aligned to
  // kDeviceAlignment.
  ArenaAllocator(void* base, int64_t size, Device device)
      : base_(static_cast<char*>(base)), size_(size), device_(device) {}

  // Running past the end is a sizing bug of the caller: aborts.
  void* Allocate(int64_t bytes) override {
    const int64_t offset = layout_.Push(bytes);
    if (layout_.top() > size_) {
      std::fprintf(stderr, "arena of %lld bytes exhausted (%lld more wanted)\n",
                   static_cast<long long>(size_),
                   static_cast<long long>(AlignedDeviceBytes(bytes)));
      std::abort();
    }
    return base_ + offset;
  }
  void Free(void* p) override { layout_.Pop(static_cast<char*>(p) - base_); }
  Device device() const override { return device_; }

  // Forgets every block: the next allocations start again at the beginning.
  void Reset() { layout_.Reset(); }
  int64_t size() const { return size_; }
  int64_t used() const { return layout_.top(); }
  int64_t peak() const { return layout_.peak(); }

 private:
  char* base_;
  int64_t size_;
  Device device_;
  StackLayout layout_;
};

}  // namespace dsv3
