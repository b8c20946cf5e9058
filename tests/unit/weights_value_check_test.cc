// Issue 19, bug 10: NaN/Inf weights, NaN block scales and FP8 NaN codes loaded silently (all-zero
// output while health said SERVING). The value checks name the file, the tensor and the element.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/weights/checkpoint.h"
#include "engine/weights/value_check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/unit/safetensors_writer.h"

namespace dsv3::weights_value_check_test {
namespace {

using ::dsv3::testing::BytesOf;
using ::dsv3::testing::Serialize;
using ::dsv3::testing::StTensor;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::WriteBytes;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// A 2x4 linear "w" (FP8 with a 1x1 scale grid, or `dtype` floats) written with `fp8` bytes or
// `values`, plus a dense "norm" of `norm` values; returns the opened checkpoint.
struct Fixture {
  TempDir dir;
  std::unique_ptr<Checkpoint> ckpt;
  std::string file() const { return dir.file("model.safetensors"); }
  void Write(const std::vector<StTensor>& tensors) {
    WriteBytes(file(), Serialize(tensors));
    auto opened = Checkpoint::Open(dir.path().string());
    ASSERT_TRUE(opened.ok()) << opened.status();
    ckpt = *std::move(opened);
  }
};

std::string Bf16Bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h;
  for (float f : v) h.push_back(F32ToBf16(f));
  return BytesOf(h);
}

TEST(ValueCheckTest, FiniteWeightsPass) {
  Fixture f;
  f.Write({{"w.weight", "F8_E4M3", {2, 4}, std::string("\x00\x01\x7e\xfe\x80\x38\x40\x10", 8)},
           {"w.weight_scale_inv", "F32", {1, 1}, BytesOf(std::vector<float>{0.5f})},
           {"norm", "BF16", {3}, Bf16Bytes({1.0f, -0.0f, 65504.0f})}});
  EXPECT_TRUE(CheckLinearValues(*f.ckpt, "w", 2, 4, {}).ok());
  EXPECT_TRUE(CheckFiniteTensor(*f.ckpt, "norm").ok());
}

TEST(ValueCheckTest, NanAndInfFloatWeightsAreRejectedNamingFileTensorAndElement) {
  for (const char* dtype : {"F32", "BF16"}) {
    for (const float bad : {kNaN, kInf, -kInf}) {
      Fixture f;
      const std::vector<float> w = {0, 1, 2, 3, 4, 5, bad, 7};
      f.Write({{"w.weight", dtype, {2, 4}, dtype == std::string("F32") ? BytesOf(w) : Bf16Bytes(w)},
               {"norm", dtype, {2}, dtype == std::string("F32") ? BytesOf(std::vector{1.f, bad})
                                                                : Bf16Bytes({1.f, bad})}});
      const char* what = std::isnan(bad) ? "is NaN" : "is Inf";
      EXPECT_THAT(CheckLinearValues(*f.ckpt, "w", 2, 4, {}).message(),
                  AllOf(HasSubstr(f.file()), HasSubstr("tensor 'w.weight'"),
                        HasSubstr(std::string("element [1, 2] ") + what)))
          << dtype;
      EXPECT_THAT(CheckFiniteTensor(*f.ckpt, "norm").message(),
                  AllOf(HasSubstr(f.file()), HasSubstr("tensor 'norm'"),
                        HasSubstr(std::string("element 1 ") + what)));
    }
  }
}

TEST(ValueCheckTest, Fp8NanCodesAreRejected) {
  for (const char code : {'\x7f', '\xff'}) {
    Fixture f;
    std::string bytes(8, '\x38');
    bytes[5] = code;
    f.Write({{"w.weight", "F8_E4M3", {2, 4}, bytes},
             {"w.weight_scale_inv", "F32", {1, 1}, BytesOf(std::vector<float>{1.0f})}});
    EXPECT_THAT(CheckLinearValues(*f.ckpt, "w", 2, 4, {}).message(),
                AllOf(HasSubstr("tensor 'w.weight'"), HasSubstr("element [1, 1]"),
                      HasSubstr("FP8 NaN code")));
  }
}

TEST(ValueCheckTest, NanWeightScaleInvIsRejected) {
  Fixture f;
  f.Write({{"w.weight", "F8_E4M3", {2, 4}, std::string(8, '\x38')},
           {"w.weight_scale_inv", "F32", {1, 1}, BytesOf(std::vector<float>{kNaN})}});
  EXPECT_THAT(CheckLinearValues(*f.ckpt, "w", 2, 4, {}).message(),
              AllOf(HasSubstr(f.file()), HasSubstr("tensor 'w.weight_scale_inv'"),
                    HasSubstr("element 0 is NaN")));
}

TEST(ValueCheckTest, OnlyTheRanksSliceIsScanned) {
  Fixture f;
  std::string bytes(8, '\x38');
  bytes[7] = '\x7f';  // row 1, column 3
  f.Write({{"w.weight", "F8_E4M3", {2, 4}, bytes},
           {"w.weight_scale_inv", "F32", {1, 1}, BytesOf(std::vector<float>{1.0f})}});
  EXPECT_TRUE(CheckLinearValues(*f.ckpt, "w", 2, 4, {0, 1, 0, -1}).ok());  // row 0 only
  EXPECT_TRUE(CheckLinearValues(*f.ckpt, "w", 2, 4, {0, -1, 0, 3}).ok());  // columns 0-2
  EXPECT_FALSE(CheckLinearValues(*f.ckpt, "w", 2, 4, {1, 2, 2, 4}).ok());
}

}  // namespace
}  // namespace dsv3::weights_value_check_test
