// LinearStack (engine/weights/linear_stack.h): the stacked weight, read back as float32, holds
// each part's rows exactly where its StackedLinear::Part says (the same values the part alone
// loads to), with FP8 parts on 128-row boundaries and zero rows padding the last block.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/dtype.h"
#include "engine/weights/linear_stack.h"
#include "engine/weights/staged_tensors.h"

namespace dsv3::weights_linear_stack_test {
namespace {

using ::testing::HasSubstr;

struct PartSpec {
  DType dtype;
  int64_t n;
  int64_t row_begin, row_end;  // the rows stacked
};

// Linear weights "p<i>.weight" [n, k] (FP8 with per-block scales that differ block to block,
// or BF16), held as a TensorSource.
class Parts {
 public:
  Parts(const std::vector<PartSpec>& specs, int64_t k) : k_(k) {
    std::mt19937 rng(5);
    for (size_t i = 0; i < specs.size(); ++i) {
      const PartSpec& s = specs[i];
      const std::string prefix = "p" + std::to_string(i);
      auto& w = buffers_.emplace_back();
      if (s.dtype == DType::kF8E4M3) {
        w.resize(s.n * k);
        // e4m3 codes of magnitude below 448 (0x7f and 0xff are NaN).
        for (auto& b : w) b = static_cast<uint8_t>(rng() % 0x7e) | (rng() % 2 ? 0x80 : 0);
        auto& sc = scales_.emplace_back(ScaleBlocks(s.n) * ScaleBlocks(k));
        for (size_t j = 0; j < sc.size(); ++j) sc[j] = 0.001f * static_cast<float>(j + 1 + i);
        source_.Add(
            prefix + ".weight_scale_inv", "parts.safetensors",
            TensorView::Contiguous(sc.data(), DType::kF32, {ScaleBlocks(s.n), ScaleBlocks(k)}));
      } else {
        w.resize(s.n * k * 2);
        for (int64_t j = 0; j < s.n * k; ++j) {
          const uint16_t v =
              F32ToBf16(static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 997.0f);
          std::memcpy(&w[2 * j], &v, 2);
        }
      }
      source_.Add(prefix + ".weight", "parts.safetensors",
                  TensorView::Contiguous(w.data(), s.dtype, {s.n, k}));
    }
  }
  const TensorSource& source() const { return source_; }

 private:
  int64_t k_;
  std::vector<std::vector<uint8_t>> buffers_;
  std::vector<std::vector<float>> scales_;
  StagedTensors source_;
};

// Rows [r0, r1) of the built stack as float32 [r1 - r0, k].
std::vector<float> StackRows(const LinearStack::Built& b, int64_t k, int64_t r0, int64_t r1) {
  std::vector<float> out((r1 - r0) * k);
  const TensorView& w = b.weight.view();
  if (w.dtype == DType::kF8E4M3) {
    DequantizeFp8Blocks(w.ptr<uint8_t>(), w.dim(0), k, b.scale_inv.ptr<float>(), kFp8ScaleBlock,
                        kFp8ScaleBlock, r0, r1, 0, k, out.data());
  } else if (w.dtype == DType::kBF16) {
    const uint16_t* v = w.ptr<uint16_t>();
    for (int64_t i = 0; i < (r1 - r0) * k; ++i) out[i] = Bf16ToF32(v[r0 * k + i]);
  } else {
    std::memcpy(out.data(), w.ptr<float>() + r0 * k, out.size() * sizeof(float));
  }
  return out;
}

// A weight view's rows as float32 [n, k] (row stride k; FP8 with its own block scales).
std::vector<float> WeightRows(const LinearWeight& w, int64_t k) {
  const int64_t n = w.n();
  std::vector<float> out(n * k);
  if (w.weight.dtype == DType::kF8E4M3) {
    DequantizeFp8Blocks(w.weight.ptr<uint8_t>(), n, k, w.scale_inv.ptr<float>(), kFp8ScaleBlock,
                        kFp8ScaleBlock, 0, n, 0, k, out.data());
  } else if (w.weight.dtype == DType::kBF16) {
    const uint16_t* v = w.weight.ptr<uint16_t>();
    for (int64_t i = 0; i < n * k; ++i) out[i] = Bf16ToF32(v[i]);
  } else {
    std::memcpy(out.data(), w.weight.ptr<float>(), out.size() * sizeof(float));
  }
  return out;
}

struct StackCase {
  const char* name;
  std::vector<PartSpec> parts;
  int64_t k;
  DType stacked_dtype;
  int64_t stacked_rows;
  std::vector<int64_t> offsets;
};

class LinearStackTest : public ::testing::TestWithParam<StackCase> {};

TEST_P(LinearStackTest, EveryPartReadsBackWhereItsOffsetSays) {
  const StackCase& c = GetParam();
  const Parts parts(c.parts, c.k);
  LinearStack stack("stack");
  for (size_t i = 0; i < c.parts.size(); ++i) {
    const PartSpec& s = c.parts[i];
    ASSERT_TRUE(
        stack.Add(parts.source(), "p" + std::to_string(i), s.n, c.k, s.row_begin, s.row_end).ok());
  }
  auto built = stack.Build();
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->weight.view().dtype, c.stacked_dtype);
  EXPECT_EQ(built->weight.view().dim(0), c.stacked_rows);
  EXPECT_EQ(built->weight.view().dim(1), c.k);
  if (c.stacked_dtype == DType::kF8E4M3) {
    EXPECT_EQ(built->scale_inv.view().dim(0), c.stacked_rows / kFp8ScaleBlock);
  }
  ASSERT_EQ(built->parts.size(), c.parts.size());
  for (size_t i = 0; i < c.parts.size(); ++i) {
    const PartSpec& s = c.parts[i];
    const StackedLinear::Part& p = built->parts[i];
    EXPECT_EQ(p.offset, c.offsets[i]) << "part " << i;
    EXPECT_EQ(p.n, s.row_end - s.row_begin) << "part " << i;
    auto want = parts.source().LoadLinearF32("p" + std::to_string(i), s.n, c.k,
                                             {s.row_begin, s.row_end, 0, -1});
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(StackRows(*built, c.k, p.offset, p.offset + p.n), *want) << "part " << i;
    // The part as a weight of its own (a view of the stack): the same rows, or none for an FP8
    // part that starts inside a scale block.
    const bool fp8 = c.stacked_dtype == DType::kF8E4M3;
    const StackedLinear stacked{
        {built->weight.view(), fp8 ? built->scale_inv.view() : TensorView{}}, built->parts};
    const std::optional<LinearWeight> alone = stacked.Weight(i);
    if (fp8 && p.offset % kFp8ScaleBlock != 0) {
      EXPECT_FALSE(alone.has_value()) << "part " << i;
      continue;
    }
    ASSERT_TRUE(alone.has_value()) << "part " << i;
    EXPECT_EQ(alone->n(), p.n);
    EXPECT_EQ(WeightRows(*alone, c.k), *want) << "part " << i;
  }
  // FP8 stacks: the rows after the last part (its block's padding) are zero.
  if (c.stacked_dtype == DType::kF8E4M3) {
    const int64_t last = built->parts.back().offset + built->parts.back().n;
    const std::vector<float> tail = StackRows(*built, c.k, last, c.stacked_rows);
    for (float v : tail) ASSERT_EQ(v, 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LinearStackTest,
    ::testing::Values(
        // V3's q_a (1536) and kv_a (576): q_a ends on a block, kv_a's last block is partial.
        StackCase{"fp8_q_a_kv_a",
                  {{DType::kF8E4M3, 256, 0, 256}, {DType::kF8E4M3, 72, 0, 72}},
                  200,
                  DType::kF8E4M3,
                  384,
                  {0, 256}},
        // A part of 96 rows (the ragged fixture's q_lora) pads to its block.
        StackCase{"fp8_unaligned",
                  {{DType::kF8E4M3, 96, 0, 96}, {DType::kF8E4M3, 40, 0, 40}},
                  130,
                  DType::kF8E4M3,
                  256,
                  {0, 128}},
        // Tensor-parallel slices: rows [130, 200) bring block 1's rows 128-129 before them.
        StackCase{"fp8_slices",
                  {{DType::kF8E4M3, 256, 130, 200}, {DType::kF8E4M3, 256, 0, 128}},
                  64,
                  DType::kF8E4M3,
                  256,
                  {2, 128}},
        StackCase{"bf16",
                  {{DType::kBF16, 96, 0, 96}, {DType::kBF16, 40, 8, 40}},
                  130,
                  DType::kBF16,
                  128,
                  {0, 96}},
        // Mixed dtypes stack as float32 (FP8 dequantized with its own scales).
        StackCase{"mixed",
                  {{DType::kF8E4M3, 96, 0, 96}, {DType::kBF16, 40, 0, 40}},
                  130,
                  DType::kF32,
                  136,
                  {0, 96}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(LinearStackTest, PartsOfAnotherInputWidthAreRefused) {
  const Parts parts({{DType::kBF16, 8, 0, 8}, {DType::kBF16, 8, 0, 8}}, 16);
  LinearStack stack("model.layers.0.self_attn.q_a_kv_a_proj");
  ASSERT_TRUE(stack.Add(parts.source(), "p0", 8, 16, 0, 8).ok());
  const absl::Status st = stack.Add(parts.source(), "p1", 8, 32, 0, 8);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("q_a_kv_a_proj"));
}

TEST(LinearStackTest, BadRowsAndEmptyStacksAreRefused) {
  const Parts parts({{DType::kBF16, 8, 0, 8}}, 16);
  LinearStack stack("s");
  EXPECT_EQ(stack.Add(parts.source(), "p0", 8, 16, 4, 9).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stack.Add(parts.source(), "p0", 8, 16, 4, 4).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stack.Build().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stack.Add(parts.source(), "missing", 8, 16, 0, 8).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dsv3::weights_linear_stack_test
