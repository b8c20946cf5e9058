// RoPE's rotation, shared by every kernel that rotates (kernels::Rope and MlaInputs in
// elementwise.cu, the small-M GEMM's RoPE epilogue in moe_grouped.cu), so that they give the
// same bits.
#pragma once

#include <cstdint>

namespace dsv3::kernels {

// The rotation of pair i at a position: cosine and sine times the attention factor (YaRN's
// mscale; 1 without YaRN), the angle in F32 as the CPU computes it.
struct RopeAngle {
  float c, s;
};
__device__ __forceinline__ RopeAngle RopeAngleAt(const float* inv_freq, float attention_factor,
                                                 int32_t position, int64_t i) {
  const float angle = inv_freq[i] * static_cast<float>(position);
  return {cosf(angle) * attention_factor, sinf(angle) * attention_factor};
}

// The pair (x0, x1) rotated: (x0 c - x1 s, x1 c + x0 s), each product and sum rounded on its own
// (no contraction into FMAs, which a compiler may otherwise choose differently per kernel).
__device__ __forceinline__ float RotatedFirst(float x0, float x1, RopeAngle r) {
  return __fsub_rn(__fmul_rn(x0, r.c), __fmul_rn(x1, r.s));
}
__device__ __forceinline__ float RotatedSecond(float x0, float x1, RopeAngle r) {
  return __fadd_rn(__fmul_rn(x1, r.c), __fmul_rn(x0, r.s));
}

}  // namespace dsv3::kernels
