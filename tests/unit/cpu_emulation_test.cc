// GpuEmulationBackend (the CPU backend rounding like the GPU): the e4m3 rounding against F32ToFp8E4M3 (itself checked
// against an exhaustive search in backend_fp8_conversion_test), the 1x128 activation quantizer
// against hand-computed values, and the wrapper's effect on ops.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/gpu_emulation_backend.h"
#include "engine/backend/dtype.h"

namespace dsv3::cpu_emulation_test {
namespace {

TEST(CpuEmulationTest, RoundToE4M3MatchesTheConverter) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exponent(-12.0f, 9.5f);
  for (int i = 0; i < 20000; ++i) {
    const float v = std::exp2(exponent(rng)) * (i % 2 ? -1.0f : 1.0f);
    ASSERT_EQ(RoundToE4M3(v), Fp8E4M3ToF32(F32ToFp8E4M3(v))) << v;
  }
  // Every code and every midpoint between neighbours (ties to even).
  for (int m = 0; m < 0x7e; ++m) {
    const float a = Fp8E4M3ToF32(static_cast<uint8_t>(m));
    const float b = Fp8E4M3ToF32(static_cast<uint8_t>(m + 1));
    EXPECT_EQ(RoundToE4M3(a), a);
    EXPECT_EQ(RoundToE4M3((a + b) / 2), (m & 1) == 0 ? a : b) << a << " " << b;
  }
  EXPECT_EQ(RoundToE4M3(448.0f), 448.0f);
  EXPECT_EQ(RoundToE4M3(1000.0f), 448.0f);  // saturates
  EXPECT_EQ(RoundToE4M3(-1000.0f), -448.0f);
  EXPECT_EQ(RoundToE4M3(0.0f), 0.0f);
  EXPECT_TRUE(std::isnan(RoundToE4M3(NAN)));
}

// One row of 130 columns: block 0 has amax 3.5 (s = 3.5 / 448 = 2^-7), block 1 (2 columns)
// amax 0.001, and a third row of zeros keeps the 1e-4 floor.
TEST(CpuEmulationTest, QuantizerMatchesHandComputedValues) {
  std::vector<float> x(2 * 130, 0.0f);
  x[0] = 3.5f;        // 448 * s: exact
  x[1] = 1.0f;        // 128: exact
  x[2] = 0.3f;        // 38.4 -> 40 (step 4 in [32, 64)) -> 0.3125
  x[3] = 0.265625f;   // 34: the tie between 32 and 36 -> 32 (even mantissa) -> 0.25
  x[4] = 0.01f;       // 1.28 -> 1.25 (step 1/8) -> 0.009765625
  x[5] = -0.0001f;    // -0.0128: subnormal step 2^-9 -> -7 * 2^-9 -> -7 * 2^-16
  x[128] = 0.001f;    // block 1: s = 0.001 / 448, 448 -> exact
  x[129] = 0.00031f;  // 138.88 -> 144 (step 16 in [128, 256)) -> 144 * s
  FakeQuantizeActivations(x.data(), 1, 130, 130);
  std::vector<float> scales(2 * 2);
  FakeQuantizeActivations(x.data() + 130, 1, 130, 130, scales.data() + 2);
  EXPECT_EQ(x[0], 3.5f);
  EXPECT_EQ(x[1], 1.0f);
  EXPECT_EQ(x[2], 0.3125f);
  EXPECT_EQ(x[3], 0.25f);
  EXPECT_EQ(x[4], 0.009765625f);
  EXPECT_EQ(x[5], -7.0f / 65536.0f);
  EXPECT_EQ(x[6], 0.0f);
  const float s1 = 0.001f / 448.0f;
  EXPECT_EQ(x[128], 448.0f * s1);
  EXPECT_EQ(x[129], 144.0f * s1);
  // A row of zeros: scale max(0, 1e-4) / 448, values stay zero.
  EXPECT_EQ(scales[2], 1e-4f / 448.0f);
  EXPECT_EQ(scales[3], 1e-4f / 448.0f);
  for (int i = 130; i < 260; ++i) EXPECT_EQ(x[i], 0.0f);
}

// Linear with an FP8 weight quantizes x only under fp8_activations, and a float weight never;
// bf16_activations rounds x to BF16 first.
TEST(CpuEmulationTest, LinearQuantizesOnlyBeforeFp8Weights) {
  // W = identity [2, 2] as FP8 (code 0x38 is 1.0) with scale 1, and as F32.
  std::vector<uint8_t> q = {0x38, 0, 0, 0x38};
  std::vector<float> scale = {1.0f}, eye = {1, 0, 0, 1};
  const TensorView wq = TensorView::Contiguous(q.data(), DType::kF8E4M3, {2, 2});
  const TensorView ws = TensorView::Contiguous(scale.data(), DType::kF32, {1, 1});
  const TensorView wf = TensorView::Contiguous(eye.data(), DType::kF32, {2, 2});
  std::vector<float> x = {3.5f, 0.3f}, y(2);
  const TensorView xv = TensorView::Contiguous(x.data(), DType::kF32, {1, 2});
  const TensorView yv = TensorView::Contiguous(y.data(), DType::kF32, {1, 2});
  std::vector<Tensor> storage;

  CpuBackend plain(1);
  plain.Linear(xv, *plain.MakeLinear(wq, ws, storage), yv);
  EXPECT_EQ(y[1], 0.3f);

  GpuEmulationBackend fp8(1, GpuEmulation{.fp8_activations = true});
  fp8.Linear(xv, *fp8.MakeLinear(wq, ws, storage), yv);
  EXPECT_EQ(y[0], 3.5f);
  EXPECT_EQ(y[1], 0.3125f);
  fp8.Linear(xv, *fp8.MakeLinear(wf, {}, storage), yv);
  EXPECT_EQ(y[1], 0.3f);
  EXPECT_EQ(x[1], 0.3f);  // the input is left alone

  GpuEmulationBackend bf16(1, GpuEmulation{.bf16_activations = true});
  bf16.Linear(xv, *bf16.MakeLinear(wf, {}, storage), yv);
  EXPECT_EQ(y[1], RoundToBf16(0.3f));
  EXPECT_NE(y[1], 0.3f);
}

// bf16_activations follows the GPU's storage: the residual stream is F32 there, so additions and
// RMSNorms into another buffer see exact inputs, while an in-place RMSNorm (the q_a and kv_a
// latents, BF16 linear outputs on the GPU) reads its input rounded to BF16.
TEST(CpuEmulationTest, Bf16KeepsTheResidualStreamExact) {
  GpuEmulationBackend bf16(1, GpuEmulation{.bf16_activations = true});
  CpuBackend plain(1);
  const float fine = 1.0f + 1.0f / 1024;  // not a BF16 value: BF16 keeps 8 significant bits
  ASSERT_NE(RoundToBf16(fine), fine);
  std::vector<float> a = {fine, 2.0f}, b = {1.0f / 4096, 0.5f}, sum(2);
  const auto view = [](std::vector<float>& v) {
    return TensorView::Contiguous(v.data(), DType::kF32, {1, static_cast<int64_t>(v.size())});
  };
  bf16.Add(view(a), view(b), view(sum));
  EXPECT_EQ(sum[0], fine + 1.0f / 4096);
  EXPECT_EQ(sum[1], 2.5f);

  std::vector<float> w = {1.0f, 1.0f}, apart(2), want(2), in_place = a;
  bf16.RmsNorm(view(a), view(w), 1e-6f, view(apart));
  plain.RmsNorm(view(a), view(w), 1e-6f, view(want));
  EXPECT_EQ(apart, want);
  bf16.RmsNorm(view(in_place), view(w), 1e-6f, view(in_place));
  std::vector<float> rounded = {RoundToBf16(fine), 2.0f};
  plain.RmsNorm(view(rounded), view(w), 1e-6f, view(want));
  EXPECT_EQ(in_place, want);
  EXPECT_NE(in_place, apart);
}

}  // namespace
}  // namespace dsv3::cpu_emulation_test
