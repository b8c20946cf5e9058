// Element types that appear in checkpoints and device tensors, and exact scalar conversions.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace dsv3 {

enum class DType : uint8_t { kF32, kBF16, kF16, kF8E4M3, kI32, kI64, kU8 };

// Bytes per element.
constexpr int64_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kF8E4M3: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
  }
  return 0;
}

// The safetensors spelling ("F32", "BF16", "F16", "F8_E4M3", "I32", "I64", "U8").
std::string_view DTypeName(DType t);
std::optional<DType> DTypeFromSafetensorsName(std::string_view name);

inline float Bf16ToF32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float F16ToF32(uint16_t bits);

// `value` as one element of a 2- or 4-byte type (F32; BF16 rounded to nearest even; I32
// truncated), in the low DTypeSize(t) bytes: a fill pattern.
inline uint32_t ElementBits(DType t, float value) {
  if (t == DType::kI32) return static_cast<uint32_t>(static_cast<int32_t>(value));
  if (t == DType::kBF16) return F32ToBf16(value);
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return bits;
}

// OCP FP8 E4M3 (finite-only: 0x7f/0xff are NaN, max normal 448).
float Fp8E4M3ToF32(uint8_t bits);
// Round to nearest even with saturation to +-448 (the convention of torch's float8_e4m3fn cast
// after clamping, which is what DeepSeek's quantizers do).
uint8_t F32ToFp8E4M3(float f);

}  // namespace dsv3
