// KV sizing and the context limit (engine/kv_sizing.h), host arithmetic only: which flag sized
// the pool, when --max-model-len fails startup or the default is capped (with a warning naming
// the flags), and the --gpu-memory-utilization budget and its refusals.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "engine/kv_sizing.h"

namespace dsv3::engine_kv_sizing_test {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

EngineConfig Config(int64_t blocks, int64_t kv_mb, double fraction, int64_t max_model_len) {
  EngineConfig c;
  c.num_kv_blocks = blocks;
  c.kv_memory_bytes = kv_mb << 20;
  c.gpu_memory_utilization = fraction;
  c.max_model_len = max_model_len;
  return c;
}

TEST(KvSizingFlagTest, NamesTheFlagThatSizedThePool) {
  EXPECT_EQ(KvSizingFlag(Config(16, 1024, 0.9, 0)), "--num-kv-blocks 16");
  EXPECT_EQ(KvSizingFlag(Config(0, 1024, 0.9, 0)), "--kv-memory-mb 1024");
  EXPECT_EQ(KvSizingFlag(Config(0, 0, 0.9, 0)), "--gpu-memory-utilization 0.9");
}

TEST(ResolveMaxModelLenTest, ExplicitMustFitDefaultIsCappedWithAWarning) {
  const struct {
    int64_t max_model_len, max_position, capacity;
    int64_t want;                 // -1: InvalidArgument
    std::vector<std::string> says;  // substrings of the error, or of the warning
  } cases[] = {
      {0, 4096, 8192, 4096, {}},
      {0, 4096, 4096, 4096, {}},
      {0, 4096, 1024, 1024,
       {"the context limit is 1024 tokens", "--kv-memory-mb 64", "max_position_embeddings 4096",
        "--max-model-len"}},
      {2048, 4096, 8192, 2048, {}},
      {1024, 4096, 1024, 1024, {}},
      {1025, 4096, 1024, -1,
       {"--max-model-len 1025 is more than the maximum number of tokens the KV cache can hold "
        "(1024, sized by --kv-memory-mb 64)",
        "increase --gpu-memory-utilization, --kv-memory-mb or --num-kv-blocks, or decrease "
        "--max-model-len"}},
      {5000, 4096, 8192, -1, {"--max-model-len 5000", "max_position_embeddings (4096"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.max_model_len << " " << c.max_position << " "
                                      << c.capacity);
    std::string warning = "stale";
    auto got = ResolveMaxModelLen(Config(0, 64, 0, c.max_model_len), c.max_position, c.capacity,
                                  &warning);
    if (c.want < 0) {
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
      for (const auto& s : c.says) EXPECT_THAT(got.status().message(), HasSubstr(s));
      continue;
    }
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, c.want);
    if (c.says.empty()) {
      EXPECT_EQ(warning, "");
    }
    for (const auto& s : c.says) EXPECT_THAT(warning, HasSubstr(s));
  }
}

TEST(KvBytesForGpuMemoryTest, WhatTheFractionLeavesOrAnErrorNamingTheFlags) {
  constexpr int64_t kGiB = int64_t{1} << 30;
  const struct {
    double fraction;
    GpuMemoryUse use;
    int64_t want;  // -1: InvalidArgument
    std::vector<std::string> says;
  } cases[] = {
      // 0.9 x 100 = 90 GiB: 90 - 60 - 5 - 2 = 23 GiB of KV.
      {0.9, {100 * kGiB, 99 * kGiB, 60 * kGiB, 5 * kGiB, 2 * kGiB}, 23 * kGiB, {}},
      {0.5, {100 * kGiB, 99 * kGiB, 10 * kGiB, 0, 0}, 40 * kGiB, {}},
      // Another process holds half the device.
      {0.9, {100 * kGiB, 50 * kGiB, 10 * kGiB, 0, 0}, -1,
       {"--gpu-memory-utilization 0.9 asks for 90.00 GiB of the device's 100.00 GiB",
        "only 50.00 GiB were free", "--kv-memory-mb"}},
      // Weights alone fill the fraction.
      {0.5, {100 * kGiB, 99 * kGiB, 48 * kGiB, 1 * kGiB, 1 * kGiB}, -1,
       {"leave nothing for the KV cache", "increase --gpu-memory-utilization",
        "--max-batched-tokens", "--cuda-graph-memory-mb"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.fraction);
    auto got = KvBytesForGpuMemory(c.fraction, c.use);
    if (c.want < 0) {
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
      for (const auto& s : c.says) EXPECT_THAT(got.status().message(), HasSubstr(s));
    } else {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, c.want);
    }
  }
}

TEST(EngineConfigTest, GpuMemoryUtilizationOutsideItsRangeNamesTheFlag) {
  for (double bad : {-0.1, 1.5}) {
    const absl::Status s = Config(0, 0, bad, 0).Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("--gpu-memory-utilization must be in (0, 1]"));
  }
  EXPECT_FALSE(Config(0, 0, 0, 0).Validate().ok());  // no size at all
  EXPECT_TRUE(Config(0, 0, 0.9, 0).Validate().ok());
}

}  // namespace
}  // namespace dsv3::engine_kv_sizing_test
