#include "engine/backend/cuda/stream_allocator.h"

#include <new>

#include "kernels/launch_check.h"

namespace dsv3 {

void* StreamAllocator::Allocate(int64_t bytes) {
  const int64_t aligned = AlignedDeviceBytes(bytes);
  void* p = nullptr;
  if (cudaMallocAsync(&p, static_cast<size_t>(aligned), stream_) != cudaSuccess) {
    cudaGetLastError();
    throw std::bad_alloc();
  }
  if (counting_) offsets_[p] = layout_.Push(aligned);
  return p;
}

void StreamAllocator::Free(void* p) {
  if (counting_) {
    if (auto it = offsets_.find(p); it != offsets_.end()) {
      layout_.Pop(it->second);
      offsets_.erase(it);
    }
  }
  on_free_(p);
  DSV3_CUDA_CHECK(cudaFreeAsync(p, stream_));
}

}  // namespace dsv3
