// F32ToFp8E4M3 (binary search over the code table) against the obviously correct exhaustive
// nearest search it replaced: random values over the whole range, every code, every midpoint
// between neighbours and the floats just beside it, saturation, zeros and NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/backend/dtype.h"

namespace dsv3::backend_fp8_conversion_test {
namespace {

// Nearest of the 127 finite magnitudes, ties to the even code, saturating at 448.
uint8_t ExhaustiveFp8(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  const float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  uint8_t best = 0;
  float best_err = INFINITY;
  for (uint8_t m = 0; m <= 0x7e; ++m) {
    const float err = std::fabs(Fp8E4M3ToF32(m) - a);
    if (err < best_err || (err == best_err && (m & 1) == 0)) {
      best = m;
      best_err = err;
    }
  }
  return sign | best;
}

TEST(Fp8ConversionTest, MatchesExhaustiveSearchOnRandomValues) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> exponent(-16.0f, 10.0f);
  for (int i = 0; i < 200000; ++i) {
    const float v = std::exp2(exponent(rng)) * (i % 2 ? -1.0f : 1.0f);
    ASSERT_EQ(F32ToFp8E4M3(v), ExhaustiveFp8(v)) << v;
  }
}

TEST(Fp8ConversionTest, MatchesExhaustiveSearchAtCodesAndMidpoints) {
  for (int m = 0; m <= 0x7e; ++m) {
    const float a = Fp8E4M3ToF32(static_cast<uint8_t>(m));
    EXPECT_EQ(F32ToFp8E4M3(a), m);
    EXPECT_EQ(F32ToFp8E4M3(-a), m == 0 ? 0x80 : (0x80 | m));
    if (m == 0x7e) continue;
    const float mid = (a + Fp8E4M3ToF32(static_cast<uint8_t>(m + 1))) / 2;
    for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1000.0f)}) {
      EXPECT_EQ(F32ToFp8E4M3(v), ExhaustiveFp8(v)) << v;
      EXPECT_EQ(F32ToFp8E4M3(-v), ExhaustiveFp8(-v)) << -v;
    }
  }
}

TEST(Fp8ConversionTest, SaturatesAndKeepsZerosAndNan) {
  EXPECT_EQ(F32ToFp8E4M3(448.0f), 0x7e);
  EXPECT_EQ(F32ToFp8E4M3(1e30f), 0x7e);
  EXPECT_EQ(F32ToFp8E4M3(-1e30f), 0xfe);
  EXPECT_EQ(F32ToFp8E4M3(0.0f), 0x00);
  EXPECT_EQ(F32ToFp8E4M3(-0.0f), 0x80);
  EXPECT_EQ(F32ToFp8E4M3(1e-10f), 0x00);
  EXPECT_EQ(F32ToFp8E4M3(NAN), 0x7f);
}

}  // namespace
}  // namespace dsv3::backend_fp8_conversion_test
