// RandomTensors (random weights in checkpoint form): each kind of tensor has the dtype, shape
// and spread its contract states, the same seed gives the same values (however the filling was
// split over threads), another seed other values, and it holds only the last tensor made.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/weights/random_tensors.h"

namespace dsv3::weights_random_tensors_test {
namespace {

struct Moments {
  double mean = 0, stddev = 0, min = INFINITY, max = -INFINITY;
};

Moments Measure(const std::vector<float>& v) {
  Moments m;
  for (float x : v) {
    m.mean += x;
    m.min = std::min<double>(m.min, x);
    m.max = std::max<double>(m.max, x);
  }
  m.mean /= v.size();
  for (float x : v) m.stddev += (x - m.mean) * (x - m.mean);
  m.stddev = std::sqrt(m.stddev / v.size());
  return m;
}

struct LinearCase {
  std::string name;
  int64_t n, k;
  bool fp8;
  float scale;
  // Expected standard deviation of the weight's values: scale for FP8 (a normal), scale/sqrt(3)
  // for BF16 (a uniform in [-scale, scale]).
  double stddev;
};

class RandomLinearTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(RandomLinearTest, HasTheStatedFormAndSpread) {
  const LinearCase& c = GetParam();
  RandomTensors random(HostAllocator());
  random.MakeLinear("w", c.n, c.k, c.fp8, c.scale, 11);
  auto raw = random.Get("w.weight");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->dtype, c.fp8 ? DType::kF8E4M3 : DType::kBF16);
  EXPECT_EQ(raw->ShapeString(), "[" + std::to_string(c.n) + ", " + std::to_string(c.k) + "]");
  EXPECT_EQ(random.Has("w.weight_scale_inv"), c.fp8);
  auto values = random.LoadLinearF32("w", c.n, c.k);
  ASSERT_TRUE(values.ok()) << values.status();
  const Moments m = Measure(*values);
  EXPECT_NEAR(m.mean, 0.0, 0.05 * c.stddev);
  EXPECT_NEAR(m.stddev, c.stddev, 0.05 * c.stddev);
  if (!c.fp8) {
    EXPECT_GE(m.min, -c.scale * 1.01);
    EXPECT_LE(m.max, c.scale * 1.01);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, RandomLinearTest,
    ::testing::Values(LinearCase{"fp8_partial_blocks", 200, 300, true, 0.05f, 0.05},
                      LinearCase{"fp8_threaded", 2048, 4096, true, 0.01f, 0.01},
                      LinearCase{"bf16", 300, 200, false, 0.5f, 0.5 / std::sqrt(3.0)},
                      LinearCase{"bf16_threaded", 4096, 2048, false, 0.1f, 0.1 / std::sqrt(3.0)}),
    [](const auto& info) { return info.param.name; });

TEST(RandomTensorsTest, DenseIsMeanPlusUniformInItsStatedType) {
  RandomTensors random(HostAllocator());
  const int64_t vector_shape[] = {1000};
  random.MakeDense("norm", vector_shape, 1.0f, 0.1f, 3);
  auto norm = random.Get("norm");
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(norm->dtype, DType::kF32);
  auto values = random.LoadF32("norm", vector_shape);
  ASSERT_TRUE(values.ok());
  for (float v : *values) ASSERT_TRUE(v >= 0.9f && v <= 1.1f) << v;
  EXPECT_NEAR(Measure(*values).mean, 1.0, 0.01);

  const int64_t table_shape[] = {64, 96};
  random.MakeDense("embed", table_shape, 0.0f, 0.02f, 4);
  EXPECT_FALSE(random.Has("norm"));  // only the last tensor made is held
  auto embed = random.Get("embed");
  ASSERT_TRUE(embed.ok());
  EXPECT_EQ(embed->dtype, DType::kBF16);
  EXPECT_EQ(embed->ShapeString(), "[64, 96]");
}

TEST(RandomTensorsTest, SameSeedSameValuesOtherSeedOtherValues) {
  RandomTensors a(HostAllocator()), b(HostAllocator());
  // Large enough to be filled on several threads.
  a.MakeLinear("w", 1024, 8192, true, 0.01f, 5);
  b.MakeLinear("w", 1024, 8192, true, 0.01f, 5);
  auto va = a.LoadLinearF32("w", 1024, 8192), vb = b.LoadLinearF32("w", 1024, 8192);
  ASSERT_TRUE(va.ok() && vb.ok());
  EXPECT_EQ(*va, *vb);
  b.MakeLinear("w", 1024, 8192, true, 0.01f, 6);
  auto vc = b.LoadLinearF32("w", 1024, 8192);
  ASSERT_TRUE(vc.ok());
  EXPECT_NE(*va, *vc);
}

TEST(RandomTensorsTest, AbsentNameIsNotFound) {
  RandomTensors random(HostAllocator());
  random.MakeLinear("w", 8, 8, false, 1.0f, 1);
  auto missing = random.Get("v.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(random.FileOf("v.weight"), "");
}

}  // namespace
}  // namespace dsv3::weights_random_tensors_test
