// The op table (tests/op_table.h) on the device: every row on the CPU backend (the reference)
// and on the CUDA backend, compared within the row's per-dtype tolerance. The same rows run in
// CI against the CPU's GPU emulation (tests/unit/cpu_op_table_test.cc).
#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/forwarding_backend.h"
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

// The fused ops (one kernel each on the GPU) give the same bits as the ops they fuse: the
// same row through a plain ForwardingBackend, whose AddRmsNorm and RmsNormLinear are the
// Backend defaults, runs the two ops on the same GPU.
class CudaFusedOpsTest : public CudaOpTableTest {};

TEST_P(CudaFusedOpsTest, EqualTheirPartsBitForBit) {
  const OpRow& row = GetParam();
  ForwardingBackend parts(*gpu_);
  std::mt19937 rng_fused(17), rng_parts(17);
  const std::vector<float> fused = row.run(*gpu_, rng_fused);
  const std::vector<float> want = row.run(parts, rng_parts);
  ASSERT_EQ(fused.size(), want.size());
  int64_t differ = 0;
  for (size_t i = 0; i < want.size(); ++i) differ += fused[i] != want[i] ? 1 : 0;
  EXPECT_EQ(differ, 0) << "of " << want.size();
}

std::vector<OpRow> FusedOpRows() {
  std::vector<OpRow> rows;
  for (OpRow& row : ::dsv3::testing::OpTable()) {
    if (row.name.starts_with("add_rmsnorm_") || row.name.starts_with("rmsnorm_linear_") ||
        row.name.starts_with("mla_inputs_")) {
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

INSTANTIATE_TEST_SUITE_P(Fused, CudaFusedOpsTest, ::testing::ValuesIn(FusedOpRows()),
                         [](const auto& info) { return info.param.name; });

INSTANTIATE_TEST_SUITE_P(Ops, CudaOpTableTest, ::testing::ValuesIn(::dsv3::testing::OpTable()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace dsv3
