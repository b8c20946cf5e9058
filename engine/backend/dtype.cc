#include "engine/backend/dtype.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace dsv3 {

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kU8: return "U8";
  }
  return "?";
}

std::optional<DType> DTypeFromSafetensorsName(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "F8_E4M3") return DType::kF8E4M3;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  if (name == "U8") return DType::kU8;
  return std::nullopt;
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

float Fp8E4M3ToF32(uint8_t b) {
  const uint32_t sign = b >> 7;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t mant = b & 0x7u;
  float v;
  if (exp == 15 && mant == 7) {
    v = NAN;
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant/8 * 2^-6
  } else {
    v = std::ldexp(static_cast<float>(mant | 8u), static_cast<int>(exp) - 10);
  }
  return sign ? -v : v;
}

uint8_t F32ToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  // Codes 0..0x7e are the finite magnitudes in increasing order: binary search for the first
  // code at or above `a`, then the nearer of it and the one below, ties to the even code.
  // (Tests generate millions of FP8 weights through this; tests/unit/backend_fp8_conversion_test
  // checks it against an exhaustive search.)
  static const std::array<float, 0x7f> magnitudes = [] {
    std::array<float, 0x7f> m{};
    for (int c = 0; c <= 0x7e; ++c) m[c] = Fp8E4M3ToF32(static_cast<uint8_t>(c));
    return m;
  }();
  const auto above = std::lower_bound(magnitudes.begin(), magnitudes.end(), a);
  const int hi = static_cast<int>(above - magnitudes.begin());  // a < 448: hi <= 0x7e
  if (hi == 0 || magnitudes[hi] == a) return sign | static_cast<uint8_t>(hi);
  const int lo = hi - 1;
  const float d_lo = a - magnitudes[lo], d_hi = magnitudes[hi] - a;
  const int nearest = d_lo < d_hi ? lo : d_hi < d_lo ? hi : ((lo & 1) == 0 ? lo : hi);
  return sign | static_cast<uint8_t>(nearest);
}

}  // namespace dsv3
