// Timing helpers shared by the standalone kernel benches (dense_gemm_bench.cu,
// weight_layout_bench.cu): CUDA-event timing of back-to-back launches and the device's
// device-to-device copy bandwidth, the reference their percentages are of.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/launch_check.h"

namespace dsv3::bench {

// Mean time per launch over `iters` back-to-back launches (launch(i), i counting from 0) after
// `warm` unmeasured ones, in us.
template <typename F>
double TimeUs(int warm, int iters, F&& launch) {
  cudaEvent_t a, b;
  DSV3_CUDA_CHECK(cudaEventCreate(&a));
  DSV3_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warm; ++i) launch(i);
  DSV3_CUDA_CHECK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) launch(i);
  DSV3_CUDA_CHECK(cudaEventRecord(b));
  DSV3_CUDA_CHECK(cudaEventSynchronize(b));
  float ms;
  DSV3_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  DSV3_CUDA_CHECK(cudaEventDestroy(a));
  DSV3_CUDA_CHECK(cudaEventDestroy(b));
  return ms * 1e3 / iters;
}

// Device-to-device copy of 1 GiB: GB/s counting the read and the write.
inline double CopyGbs() {
  const size_t bytes = size_t{1} << 30;
  void *src, *dst;
  DSV3_CUDA_CHECK(cudaMalloc(&src, bytes));
  DSV3_CUDA_CHECK(cudaMalloc(&dst, bytes));
  DSV3_CUDA_CHECK(cudaMemset(src, 1, bytes));
  const double us = TimeUs(2, 10, [&](int) {
    DSV3_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
  });
  DSV3_CUDA_CHECK(cudaFree(src));
  DSV3_CUDA_CHECK(cudaFree(dst));
  return 2.0 * bytes / us * 1e-3;
}

}  // namespace dsv3::bench
