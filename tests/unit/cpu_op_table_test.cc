// The op table (tests/op_table.h) in CI: every row on the CPU backend (the reference) and on
// GpuEmulationBackend (the CPU rounding like the GPU), compared within the row's per-dtype
// tolerance. The same rows run against the CUDA backend in tests/gpu/cuda_op_table_test.cc.
#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/gpu_emulation_backend.h"
#include "tests/op_table.h"

namespace dsv3::cpu_op_table_test {
namespace {

using ::dsv3::testing::OpRow;

class CpuOpTableTest : public ::testing::TestWithParam<OpRow> {
 protected:
  CpuBackend cpu_{2};
  GpuEmulationBackend emulated_{2, GpuEmulation{.fp8_activations = true, .bf16_activations = true}};
};

TEST_P(CpuOpTableTest, EmulatedGpuNumericsMatchTheReference) {
  const OpRow& row = GetParam();
  std::mt19937 rng_a(17), rng_b(17);
  const std::vector<float> want = row.run(cpu_, rng_a);
  const std::vector<float> got = row.run(emulated_, rng_b);
  ASSERT_FALSE(want.empty());
  EXPECT_LT(::dsv3::testing::OpRelError(got, want), row.tolerance);
}

INSTANTIATE_TEST_SUITE_P(Ops, CpuOpTableTest, ::testing::ValuesIn(::dsv3::testing::OpTable()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace dsv3::cpu_op_table_test
