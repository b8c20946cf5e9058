// Device-side helpers shared by the kernels in this folder (included only by .cu files).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/elem_type.h"

namespace dsv3::kernels {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(bf16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 FromFloat<bf16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024). Every thread gets it.
__device__ __forceinline__ float BlockSum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = WarpSum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = lane < warps ? partial[lane] : 0.0f;
  return WarpSum(v);
}

// Element i of an F32, BF16 or I32 array, as float.
__device__ __forceinline__ float LoadAs(const void* base, int64_t i, ElemType t) {
  switch (t) {
    case ElemType::kBF16: return ToFloat(static_cast<const bf16*>(base)[i]);
    case ElemType::kI32: return static_cast<float>(static_cast<const int32_t*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

// Stores v as element i of an F32 or BF16 array (rounded to nearest even for BF16).
__device__ __forceinline__ void StoreAs(void* base, int64_t i, float v, ElemType t) {
  if (t == ElemType::kBF16) {
    static_cast<bf16*>(base)[i] = FromFloat<bf16>(v);
  } else {
    static_cast<float*>(base)[i] = v;
  }
}

inline int CeilDiv(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace dsv3::kernels
