// The CPU backend's PadRows and SumRowBlocks (the fixed-capacity expert-parallel dispatch's pad
// and combine, engine/model/expert_parallel_moe.h) against values worked out by hand. The same
// ops on CUDA are compared with these by the op table (pad_rows_* and sum_row_blocks_* rows).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"

namespace dsv3::cpu_row_blocks_test {
namespace {

struct SumCase {
  std::string name;
  std::vector<std::vector<float>> x;  // [blocks * R, D]
  int64_t blocks;
  int64_t n;                             // output rows, <= R
  std::vector<std::vector<float>> want;  // [n, D]
};

std::vector<SumCase> SumCases() {
  return {
      {"one_block_is_a_copy", {{1, 2}, {3, 4}}, 1, 2, {{1, 2}, {3, 4}}},
      {"two_blocks", {{1, 2}, {3, 4}, {10, 20}, {30, 40}}, 2, 2, {{11, 22}, {33, 44}}},
      // Rows [n, R) of every block are dropped (the combine's padding).
      {"trailing_rows_dropped", {{1}, {99}, {2}, {99}, {4}, {99}}, 3, 1, {{7}}},
      {"no_output_rows", {{1}, {2}}, 2, 0, {}},
      // Ascending block order from zero: ((0 + 1e8) - 1e8) + 1 = 1; another order loses the 1.
      {"ascending_order", {{1e8f}, {-1e8f}, {1.0f}}, 3, 1, {{1.0f}}},
      // A sum from +0 is never -0: -0 partials give +0, as ScatterSumRows' sum does.
      {"negative_zeros_give_zero", {{-0.0f}, {-0.0f}}, 2, 1, {{0.0f}}},
  };
}

class CpuSumRowBlocksTest : public ::testing::TestWithParam<SumCase> {};

TEST_P(CpuSumRowBlocksTest, SumsEachRowOverTheBlocksInOrder) {
  const SumCase& c = GetParam();
  const int64_t rows = static_cast<int64_t>(c.x.size()), d = static_cast<int64_t>(c.x[0].size());
  std::vector<float> x;
  for (const auto& row : c.x) x.insert(x.end(), row.begin(), row.end());
  std::vector<float> out(c.n * d, NAN);  // every element must be written
  CpuBackend(1).SumRowBlocks(TensorView::Contiguous(x.data(), DType::kF32, {rows, d}), c.blocks,
                             TensorView::Contiguous(out.data(), DType::kF32, {c.n, d}));
  for (int64_t i = 0; i < c.n; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      EXPECT_EQ(out[i * d + j], c.want[i][j]) << "row " << i << " column " << j;
      EXPECT_FALSE(std::signbit(out[i * d + j]) && out[i * d + j] == 0) << "row " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuSumRowBlocksTest, ::testing::ValuesIn(SumCases()),
                         [](const auto& info) { return info.param.name; });

// A strided source and an output that is a column range of a wider tensor.
TEST(CpuSumRowBlocksStridesTest, ReadsAndWritesOnlyTheViews) {
  std::vector<float> x = {1, 2, -9, 3, 4, -9};  // 2 blocks of [1, 2] with row stride 3
  TensorView xv = TensorView::Contiguous(x.data(), DType::kF32, {2, 2});
  xv.strides[0] = 3;
  std::vector<float> out = {5, 5, 5};  // [1, 3]; the view is columns [1, 3)
  CpuBackend(1).SumRowBlocks(xv, 2, TensorView::Contiguous(out.data() + 1, DType::kF32, {1, 2}));
  EXPECT_EQ(out, (std::vector<float>{5, 4, 6}));
}

// Rows [0, T) are copied bit for bit (a -0 and a NaN payload kept), rows [T, C) filled.
TEST(CpuPadRowsTest, CopiesTheRowsAndFillsThePadding) {
  CpuBackend cpu(1);
  const float nan_payload = std::bit_cast<float>(0x7fc00123u);
  std::vector<float> x = {-0.0f, nan_payload, 3, 4};  // [2, 2]
  std::vector<float> out(8, 7.0f);                    // [4, 2]
  cpu.PadRows(TensorView::Contiguous(x.data(), DType::kF32, {2, 2}), 0.0f,
              TensorView::Contiguous(out.data(), DType::kF32, {4, 2}));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(x[i])) << i;
  }
  for (int i = 4; i < 8; ++i) EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), 0u) << i;

  std::vector<int32_t> ids = {5, 0, 7};  // [1, 3]
  std::vector<int32_t> padded(9, 42);    // [3, 3]
  cpu.PadRows(TensorView::Contiguous(ids.data(), DType::kI32, {1, 3}), -1.0f,
              TensorView::Contiguous(padded.data(), DType::kI32, {3, 3}));
  EXPECT_EQ(padded, (std::vector<int32_t>{5, 0, 7, -1, -1, -1, -1, -1, -1}));

  std::vector<uint16_t> bf16 = {0x3f80, 0xc000};  // [1, 2] BF16 1 and -2
  std::vector<uint16_t> bf16_out(4, 0xffff);      // [2, 2]
  cpu.PadRows(TensorView::Contiguous(bf16.data(), DType::kBF16, {1, 2}), 0.0f,
              TensorView::Contiguous(bf16_out.data(), DType::kBF16, {2, 2}));
  EXPECT_EQ(bf16_out, (std::vector<uint16_t>{0x3f80, 0xc000, 0, 0}));

  std::vector<float> none(0), all_padding(3, 7.0f);  // T = 0: an idle rank's block
  cpu.PadRows(TensorView::Contiguous(none.data(), DType::kF32, {0, 1}), -1.0f,
              TensorView::Contiguous(all_padding.data(), DType::kF32, {3, 1}));
  EXPECT_EQ(all_padding, (std::vector<float>{-1, -1, -1}));
}

}  // namespace
}  // namespace dsv3::cpu_row_blocks_test
