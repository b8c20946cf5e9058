#include "engine/backend/cuda/stream_allocator.h"

#include <new>

#include "kernels/launch_check.h"

namespace dsv3 {

void* StreamAllocator::Allocate(int64_t bytes) {
  const int64_t aligned = AlignedDeviceBytes(bytes);
  if (counting_) counted_ += aligned;
  void* p = nullptr;
  if (cudaMallocAsync(&p, static_cast<size_t>(aligned), stream_) != cudaSuccess) {
    cudaGetLastError();
    throw std::bad_alloc();
  }
  return p;
}

void StreamAllocator::Free(void* p) {
  on_free_(p);
  DSV3_CUDA_CHECK(cudaFreeAsync(p, stream_));
}

}  // namespace dsv3
