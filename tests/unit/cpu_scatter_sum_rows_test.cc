// The CPU backend's ScatterSumRows (the expert-parallel combine's sum, engine/model/
// expert_parallel_moe.h) and its byte copies (CopyToHost, CopyFromHost), against values worked
// out by hand: each case lists the source rows, where each goes, and the rows that must come out.
// The same op on CUDA is compared with this one by the op table (scatter_sum_rows_* rows).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"

namespace dsv3::cpu_scatter_sum_rows_test {
namespace {

struct Case {
  std::string name;
  std::vector<std::vector<float>> x;  // [R, D]
  std::vector<int32_t> index;         // [R]
  int64_t n;                          // output rows
  std::vector<std::vector<float>> want;  // [n, D]
};

std::vector<Case> Cases() {
  return {
      {"identity", {{1, 2}, {3, 4}}, {0, 1}, 2, {{1, 2}, {3, 4}}},
      {"permutation", {{1, 2}, {3, 4}, {5, 6}}, {2, 0, 1}, 3, {{3, 4}, {5, 6}, {1, 2}}},
      {"two_sources_one_row", {{1, 2}, {10, 20}, {7, 7}}, {1, 1, 0}, 2, {{7, 7}, {11, 22}}},
      {"unnamed_rows_are_zeros", {{1, -1}}, {2}, 4, {{0, 0}, {0, 0}, {1, -1}, {0, 0}}},
      {"no_sources", {}, {}, 2, {{0, 0}, {0, 0}}},
      // The sum runs in ascending source order from zero: ((0 + 1e8) - 1e8) + 1 = 1, where the
      // reverse order rounds the 1 away against -1e8 (F32's spacing there is 8) and gives 0.
      {"ascending_order", {{1e8f}, {-1e8f}, {1.0f}}, {0, 0, 0}, 1, {{1.0f}}},
  };
}

class CpuScatterSumRowsTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuScatterSumRowsTest, SumsEachOutputRowsSourcesInOrder) {
  const Case& c = GetParam();
  const int64_t r = static_cast<int64_t>(c.x.size()), d = static_cast<int64_t>(c.want[0].size());
  std::vector<float> x;
  for (const auto& row : c.x) x.insert(x.end(), row.begin(), row.end());
  std::vector<float> out(c.n * d, NAN);  // every element must be written
  CpuBackend cpu(1);
  cpu.ScatterSumRows(TensorView::Contiguous(x.data(), DType::kF32, {r, d}), c.index,
                     TensorView::Contiguous(out.data(), DType::kF32, {c.n, d}));
  for (int64_t i = 0; i < c.n; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      EXPECT_EQ(out[i * d + j], c.want[i][j]) << "row " << i << " column " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuScatterSumRowsTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

// Strided views: a source with a row stride wider than its rows, an output that is a column
// range of a wider tensor (the columns outside it untouched).
TEST(CpuScatterSumRowsStridesTest, ReadsAndWritesOnlyTheViews) {
  std::vector<float> x = {1, 2, -9, 3, 4, -9};  // [2, 2] with row stride 3
  TensorView xv = TensorView::Contiguous(x.data(), DType::kF32, {2, 2});
  xv.strides[0] = 3;
  std::vector<float> out = {5, 5, 5, 5, 5, 5};  // [2, 3]; the view is columns [1, 3)
  TensorView ov = TensorView::Contiguous(out.data() + 1, DType::kF32, {2, 2});
  ov.strides[0] = 3;
  const std::vector<int32_t> index = {1, 1};
  CpuBackend(1).ScatterSumRows(xv, index, ov);
  EXPECT_EQ(out, (std::vector<float>{5, 0, 0, 5, 4, 6}));
}

// CopyToHost and CopyFromHost move bytes of any dtype unchanged (I64 row counts, I32 ids).
TEST(CpuByteCopiesTest, RoundTripKeepsEveryByte) {
  CpuBackend cpu(1);
  const std::vector<int64_t> counts = {0, 7, int64_t{1} << 40};
  Tensor t(cpu.allocator(), DType::kI64, {1, 3});
  cpu.CopyFromHost(counts.data(), t);
  std::vector<int64_t> back(3);
  cpu.CopyToHost(t, back.data());
  EXPECT_EQ(back, counts);
  Tensor empty(cpu.allocator(), DType::kI32, {0, 4});
  cpu.CopyFromHost(nullptr, empty);  // nothing to copy: the pointer is never read
  cpu.CopyToHost(empty, nullptr);
}

}  // namespace
}  // namespace dsv3::cpu_scatter_sum_rows_test
