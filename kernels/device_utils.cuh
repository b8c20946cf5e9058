// Device-side helpers shared by the kernels in this folder (included only by .cu files).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

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

// The SwiGLU gate: silu(gate) * up in F32 (rounded by the caller where it stores).
__device__ __forceinline__ float SiluMul(float gate, float up) {
  return gate / (1.0f + expf(-gate)) * up;
}
// The SiLU-gate's value as down's quantization sees it: silu(gate) * up rounded to BF16 (as
// kernels::Binary's kSiluMul stores it), back in F32. One definition for every kernel that
// quantizes it (QuantizeActivations' SiLU-gate, the grouped GEMM's SwiGLU output), whose bits
// must agree.
__device__ __forceinline__ float SiluMulBf16(float gate, float up) {
  return ToFloat(FromFloat<bf16>(SiluMul(gate, up)));
}

// Two floats as a BF16 pair (round to nearest), lo in the low half.
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x by the SFU (the flash kernels' softmax, scale * log2(e) folded in).
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Max and sum over the 4 lanes of a quad (the lanes that hold one row of an MMA accumulator).
__device__ __forceinline__ float QuadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float QuadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// The flash kernels' softmax numerators, in place: a thread's scores s in the wgmma accumulator
// layout (s[4n], s[4n + 1] of its row r, s[4n + 2], s[4n + 3] of row r + 8) become
// 2^(s scale_log2 - mx scale_log2) with their row's max mx0 or mx1; sum0 and sum1 get the
// thread's parts of the two row sums.
template <int kScores>
__device__ __forceinline__ void ExpScores(float (&s)[kScores], float scale_log2, float mx0,
                                          float mx1, float& sum0, float& sum1) {
  const float b0 = mx0 * scale_log2, b1 = mx1 * scale_log2;
  sum0 = sum1 = 0.0f;
#pragma unroll
  for (int n = 0; n < kScores / 4; ++n) {
    s[4 * n] = Exp2(fmaf(s[4 * n], scale_log2, -b0));
    s[4 * n + 1] = Exp2(fmaf(s[4 * n + 1], scale_log2, -b0));
    s[4 * n + 2] = Exp2(fmaf(s[4 * n + 2], scale_log2, -b1));
    s[4 * n + 3] = Exp2(fmaf(s[4 * n + 3], scale_log2, -b1));
    sum0 += s[4 * n] + s[4 * n + 1];
    sum1 += s[4 * n + 2] + s[4 * n + 3];
  }
}

// P for a register-A wgmma (m64 k16 steps): a thread's scores s in the accumulator layout, 8 per
// 16 keys, packed as the A fragment's four BF16 pairs per step.
template <int kSteps>
__device__ __forceinline__ void PackScoresBf16(const float (&s)[8 * kSteps],
                                               uint32_t (&pa)[kSteps][4]) {
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
#pragma unroll
    for (int i = 0; i < 4; ++i) pa[kk][i] = PackBf16(s[8 * kk + 2 * i], s[8 * kk + 2 * i + 1]);
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Inclusive prefix sum over the warp's lanes (every lane of the warp calls it).
__device__ __forceinline__ int32_t WarpInclusiveSum(int32_t v) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int d = 1; d < 32; d *= 2) {
    const int32_t below = __shfl_up_sync(0xffffffffu, v, d);
    if (lane >= d) v += below;
  }
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

// v as an element of type t would hold it (rounded to nearest even for BF16).
__device__ __forceinline__ float RoundTo(float v, ElemType t) {
  return t == ElemType::kBF16 ? ToFloat(FromFloat<bf16>(v)) : v;
}

// FP8 e4m3 of v, saturated to the finite range.
__device__ __forceinline__ uint8_t ToE4M3(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// A 1x128 activation block's scale from its amax (SPEC section 4): max(amax, 1e-4) / 448, with
// ue8m0 rounded up to a power of two (DeepGEMM's scale format).
__device__ __forceinline__ float Block128Scale(float amax, bool ue8m0) {
  float s = fmaxf(amax, 1e-4f) / 448.0f;
  if (ue8m0) s = exp2f(ceilf(log2f(s)));
  return s;
}

// One 1x128 activation block's quantization (SPEC section 4) by the kLanes lanes that hold it
// (32: a warp, 4 columns each; 16: a half-warp, 8 each), lane l with columns [kPer l, kPer l +
// kPer) in v: s = max(amax, 1e-4) / 448 (ue8m0: rounded up to a power of two, DeepGEMM's scale
// format; a padding row, real false: 1), codes v / s as e4m3. Lane l writes its codes to
// q_block + kPer l, lane 0 the scale; nothing where `write` is false. Every lane of the warp
// calls it (with kLanes 16 both halves together: each half reduces over itself).
template <int kLanes = 32>
__device__ __forceinline__ void QuantizeBlock128(const float* v, bool real, bool ue8m0,
                                                 uint8_t* q_block, float* scale,
                                                 bool write = true) {
  static_assert(kLanes == 32 || kLanes == 16);
  constexpr int kPer = 128 / kLanes;
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < kPer; ++j) amax = fmaxf(amax, fabsf(v[j]));
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  }
  float s = Block128Scale(amax, ue8m0);
  if (!real) s = 1.0f;
  uint32_t packed[kPer / 4] = {};
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    packed[j / 4] |= static_cast<uint32_t>(ToE4M3(v[j] / s)) << (8 * (j % 4));
  }
  const int lane = threadIdx.x % kLanes;
  if (!write) return;
  if constexpr (kPer == 4) {
    *reinterpret_cast<uint32_t*>(q_block + 4 * lane) = packed[0];
  } else {
    *reinterpret_cast<uint2*>(q_block + 8 * lane) = make_uint2(packed[0], packed[1]);
  }
  if (lane == 0) *scale = s;
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

// Eight BF16 values packed in 16 bytes, as float; and eight floats packed as BF16 (rounded to
// nearest even).
__device__ __forceinline__ void Bf16x8ToFloats(const uint4& raw, float v[8]) {
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    v[2 * j] = __low2float(pairs[j]);
    v[2 * j + 1] = __high2float(pairs[j]);
  }
}
__device__ __forceinline__ uint4 FloatsToBf16x8(const float v[8]) {
  return make_uint4(PackBf16(v[0], v[1]), PackBf16(v[2], v[3]), PackBf16(v[4], v[5]),
                    PackBf16(v[6], v[7]));
}

// Eight consecutive elements of an F32 or BF16 array as float (i a multiple of 8, the array
// 16-byte aligned: one or two 16-byte loads).
__device__ __forceinline__ void Load8(const void* base, int64_t i, ElemType t, float v[8]) {
  if (t == ElemType::kBF16) {
    // One 16-byte load first: unpacking through the pointer lets the compiler split it.
    const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const bf16*>(base) + i);
    Bf16x8ToFloats(raw, v);
  } else {
    const float4* src = reinterpret_cast<const float4*>(static_cast<const float*>(base) + i);
    const float4 lo = src[0], hi = src[1];
    v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w;
    v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
  }
}

// Elements [i, i + 4) of an F32 or BF16 array as float. kVector: all four below `end` and
// element i aligned to the access (one 8-byte access for BF16, 16-byte for F32); else one
// element at a time, 0 from `end` on.
template <bool kVector>
__device__ __forceinline__ void Load4(const void* base, int64_t i, int64_t end, ElemType t,
                                      float v[4]) {
  if constexpr (kVector) {
    if (t == ElemType::kBF16) {
      const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const bf16*>(base) + i);
      const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
      v[0] = __low2float(pairs[0]), v[1] = __high2float(pairs[0]);
      v[2] = __low2float(pairs[1]), v[3] = __high2float(pairs[1]);
    } else {
      const float4 f = *reinterpret_cast<const float4*>(static_cast<const float*>(base) + i);
      v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = i + j < end ? LoadAs(base, i + j, t) : 0.0f;
  }
}

// Stores eight values as elements [i, i + 8) of an F32 or BF16 array (alignment as Load8).
__device__ __forceinline__ void Store8(void* base, int64_t i, const float v[8], ElemType t) {
  if (t == ElemType::kBF16) {
    *reinterpret_cast<uint4*>(static_cast<bf16*>(base) + i) = FloatsToBf16x8(v);
  } else {
    float4* dst = reinterpret_cast<float4*>(static_cast<float*>(base) + i);
    dst[0] = make_float4(v[0], v[1], v[2], v[3]);
    dst[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
}

// Whether [rows, cols] arrays at these bases and row strides take Load8/Store8 everywhere.
inline bool Vectorizable(int64_t cols,
                         std::initializer_list<std::pair<const void*, int64_t>> arrays) {
  if (cols % 8 != 0) return false;
  for (const auto& [base, stride] : arrays) {
    if (reinterpret_cast<uintptr_t>(base) % 16 != 0 || stride % 8 != 0) return false;
  }
  return true;
}

inline int CeilDiv(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace dsv3::kernels
