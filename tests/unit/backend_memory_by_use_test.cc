// The split of a GPU rank's device memory by use (engine/backend/memory_by_use.h), on the host:
// held is what the process took since its backend was made, the workspace is what the known
// uses leave of it (never negative), and the log line names the four uses in GiB.
#include <gtest/gtest.h>

#include <cstdint>

#include "engine/backend/memory_by_use.h"

namespace dsv3::backend_memory_by_use_test {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kMiB = int64_t{1} << 20;

TEST(GpuMemoryByUseTest, SplitsHeldIntoWeightsKvGraphsAndTheRest) {
  const struct {
    const char* name;
    DeviceMemory memory;  // total, free, free_at_start, pool peak/reserved (unused), weights
    int64_t kv_cache, graphs;
    GpuMemoryByUse want;
  } cases[] = {
      {"a backend that holds nothing yet",
       {.total = 141 * kGiB, .free = 140 * kGiB, .free_at_start = 140 * kGiB},
       0, 0,
       {.held = 0, .device_total = 141 * kGiB}},
      {"a served V3 rank: the rest is workspace",
       {.total = 141 * kGiB, .free = 18 * kGiB, .free_at_start = 140 * kGiB,
        .weight_bytes = 84 * kGiB},
       36 * kGiB, 300 * kMiB,
       {.weights = 84 * kGiB, .kv_cache = 36 * kGiB, .cuda_graphs = 300 * kMiB,
        .workspace = 2 * kGiB - 300 * kMiB, .held = 122 * kGiB, .device_total = 141 * kGiB}},
      {"nothing beyond the known uses",
       {.total = 80 * kGiB, .free = 50 * kGiB, .free_at_start = 79 * kGiB,
        .weight_bytes = 20 * kGiB},
       8 * kGiB, kGiB,
       {.weights = 20 * kGiB, .kv_cache = 8 * kGiB, .cuda_graphs = kGiB, .workspace = 0,
        .held = 29 * kGiB, .device_total = 80 * kGiB}},
      {"another process freed memory: held reads low, the workspace stays 0",
       {.total = 80 * kGiB, .free = 60 * kGiB, .free_at_start = 70 * kGiB,
        .weight_bytes = 8 * kGiB},
       4 * kGiB, 0,
       {.weights = 8 * kGiB, .kv_cache = 4 * kGiB, .workspace = 0, .held = 10 * kGiB,
        .device_total = 80 * kGiB}},
      {"more free than at start: held is 0, not negative",
       {.total = 80 * kGiB, .free = 75 * kGiB, .free_at_start = 70 * kGiB},
       0, 0,
       {.held = 0, .device_total = 80 * kGiB}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const GpuMemoryByUse got = SplitGpuMemory(c.memory, c.kv_cache, c.graphs);
    for (const GpuMemoryUseField& use : kGpuMemoryUses) {
      EXPECT_EQ(got.*use.bytes, c.want.*use.bytes) << use.label;
    }
    EXPECT_EQ(got.held, c.want.held);
    EXPECT_EQ(got.device_total, c.want.device_total);
  }
}

TEST(GpuMemoryByUseTest, UsesAddUpToHeldWhenTheKnownOnesFit) {
  const DeviceMemory memory{.total = 141 * kGiB, .free = 20 * kGiB, .free_at_start = 140 * kGiB,
                            .weight_bytes = 70 * kGiB + 123};
  const GpuMemoryByUse got = SplitGpuMemory(memory, 40 * kGiB + 7, 5 * kMiB);
  int64_t sum = 0;
  for (const GpuMemoryUseField& use : kGpuMemoryUses) sum += got.*use.bytes;
  EXPECT_EQ(sum, got.held);
}

TEST(GpuMemoryByUseTest, LogLineNamesTheFourUsesInGiB) {
  const GpuMemoryByUse m{.weights = 84 * kGiB + kGiB / 2, .kv_cache = 36 * kGiB + 38 * kGiB / 100,
                         .cuda_graphs = 0, .workspace = kGiB / 4, .held = 121 * kGiB,
                         .device_total = 141 * kGiB};
  EXPECT_EQ(DescribeGpuMemory(m),
            "held 121.00 GiB of 141.00 GiB: weights 84.50 GiB, KV cache 36.38 GiB, "
            "CUDA graphs 0.00 GiB, workspace 0.25 GiB");
}

}  // namespace
}  // namespace dsv3::backend_memory_by_use_test
