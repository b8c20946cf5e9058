// Device-side random data for the standalone kernel benches (grouped_gemm_bench.cu,
// dense_gemm_bench.cu, flash_decode_bench.cu): a counter hash, uniform block scales, and e4m3
// codes read back in F64 for their naive references.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

namespace dsv3::bench {

// A 32-bit hash of (i, seed) (splitmix64's finalizer): the same data for the same seed on any
// grid shape.
__device__ inline uint32_t Hash(uint64_t i, uint32_t seed) {
  uint64_t x = i * 0x9e3779b97f4a7c15ull + seed;
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 29;
  return static_cast<uint32_t>(x);
}

// s[i], i < count: uniform in [lo, hi).
__global__ inline void FillScales(float* s, int64_t count, float lo, float hi, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    s[i] = lo + (hi - lo) * (Hash(i, seed) >> 8) * (1.0f / 16777216.0f);
  }
}

// The value of e4m3 code b.
__device__ inline double Fp8(uint8_t b) {
  __nv_fp8_e4m3 v;
  v.__x = b;
  return static_cast<double>(static_cast<float>(v));
}

}  // namespace dsv3::bench
