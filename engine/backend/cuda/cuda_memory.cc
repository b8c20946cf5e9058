// Device memory accounting of the CUDA backend (Backend::MemoryInfo and friends): what KV sizing
// by --gpu-memory-utilization measures (engine/kv_sizing.h). Tensors come from the device's
// default stream-ordered pool, which keeps freed memory reserved (release threshold: all), so
// the pool's reserved high-water mark is the footprint of the steps run since the last reset.
#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/launch_check.h"

namespace dsv3 {
namespace {

cudaMemPool_t DefaultPool(int device) {
  cudaMemPool_t pool = nullptr;
  DSV3_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  return pool;
}

int64_t PoolAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr) {
  uint64_t value = 0;
  DSV3_CUDA_CHECK(cudaMemPoolGetAttribute(pool, attr, &value));
  return static_cast<int64_t>(value);
}

}  // namespace

std::optional<DeviceMemory> CudaBackend::MemoryInfo() {
  DSV3_CUDA_CHECK(cudaSetDevice(options_.device));
  size_t free_bytes = 0, total_bytes = 0;
  DSV3_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const cudaMemPool_t pool = DefaultPool(options_.device);
  DeviceMemory m;
  m.total = static_cast<int64_t>(total_bytes);
  m.free = static_cast<int64_t>(free_bytes);
  m.free_at_start = free_at_start_;
  m.pool_peak = PoolAttribute(pool, cudaMemPoolAttrReservedMemHigh);
  m.pool_reserved = PoolAttribute(pool, cudaMemPoolAttrReservedMemCurrent);
  m.weight_bytes = weight_bytes_;
  return m;
}

void CudaBackend::ResetPeakMemory() {
  DSV3_CUDA_CHECK(cudaSetDevice(options_.device));
  uint64_t zero = 0;  // the only value the attribute takes: resets it to the current reservation
  DSV3_CUDA_CHECK(
      cudaMemPoolSetAttribute(DefaultPool(options_.device), cudaMemPoolAttrReservedMemHigh, &zero));
}

void CudaBackend::ReleaseCachedMemory() {
  DSV3_CUDA_CHECK(cudaSetDevice(options_.device));
  Synchronize();
  DSV3_CUDA_CHECK(cudaMemPoolTrimTo(DefaultPool(options_.device), 0));
}

}  // namespace dsv3
