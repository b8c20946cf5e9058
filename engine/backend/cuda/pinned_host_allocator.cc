#include "engine/backend/cuda/pinned_host_allocator.h"

#include <cuda_runtime_api.h>

namespace dsv3 {

namespace {

class PinnedAllocator final : public Allocator {
 public:
  void* Allocate(int64_t bytes) override {
    void* p = nullptr;
    if (cudaHostAlloc(&p, bytes > 0 ? bytes : 1, cudaHostAllocPortable) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error: the caller reports the failure
      return nullptr;
    }
    return p;
  }
  void Free(void* p) override { cudaFreeHost(p); }
  Device device() const override { return Device::kCpu; }
};

}  // namespace

Allocator* PinnedHostAllocator() {
  static PinnedAllocator allocator;
  return &allocator;
}

}  // namespace dsv3
