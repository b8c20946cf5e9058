// The op table (tests/op_table.h) on the device: every row on the CPU backend (the reference)
// and on the CUDA backend, compared within the row's per-dtype tolerance. The same rows run in
// CI against the CPU's GPU emulation (tests/unit/cpu_op_table_test.cc).
#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/op_table.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::OpRow;

class CudaOpTableTest : public ::dsv3::testing::GpuTest,
                        public ::testing::WithParamInterface<OpRow> {
 protected:
  CpuBackend cpu_{4};
};

TEST_P(CudaOpTableTest, MatchesTheCpuReference) {
  const OpRow& row = GetParam();
  std::mt19937 rng_cpu(17), rng_gpu(17);
  const std::vector<float> want = row.run(cpu_, rng_cpu);
  const std::vector<float> got = row.run(*gpu_, rng_gpu);
  ASSERT_FALSE(want.empty());
  EXPECT_LT(::dsv3::testing::OpRelError(got, want), row.tolerance);
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaOpTableTest, ::testing::ValuesIn(::dsv3::testing::OpTable()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace dsv3
