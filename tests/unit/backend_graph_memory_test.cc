// Host logic that whole-step CUDA graphs rely on (engine/backend/graph_policy.h,
// engine/backend/arena_allocator.h), checked without a GPU: the arena gives a repeated sequence
// of allocations and frees the same addresses and reuses freed memory in stack order (a whole
// step fits in one layer's temporaries), the padded batch sizes, the context buckets that decode
// attention pads to, and the graph memory bound.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/backend/arena_allocator.h"
#include "engine/backend/graph_policy.h"
#include "engine/backend/tensor.h"

namespace dsv3::backend_graph_memory_test {
namespace {

TEST(ArenaAllocatorTest, RepeatedAllocationsGetTheSameAlignedAddresses) {
  alignas(256) static char buffer[1 << 16];
  ArenaAllocator arena(buffer, sizeof(buffer), Device::kCpu);
  const std::vector<int64_t> sizes = {1, 300, 256, 0, 4097, 12};
  std::vector<void*> first;
  for (int round = 0; round < 3; ++round) {
    arena.Reset();
    std::vector<void*> got;
    for (int64_t bytes : sizes) got.push_back(arena.Allocate(bytes));
    for (void* p : got) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kDeviceAlignment, 0u);
      EXPECT_GE(static_cast<char*>(p), buffer);
      EXPECT_LT(static_cast<char*>(p), buffer + sizeof(buffer));
    }
    for (size_t i = 1; i < got.size(); ++i) EXPECT_NE(got[i], got[i - 1]) << i;
    if (round == 0) {
      first = got;
    } else {
      EXPECT_EQ(got, first) << "round " << round;
    }
  }
  // 256 + 512 + 256 + 256 + 4352 + 256 bytes, each rounded up to 256.
  EXPECT_EQ(arena.used(), 256 + 512 + 256 + 256 + 4352 + 256);
}

// A step's layers free their temporaries before the next layer makes its own: the arena must
// hold one layer's worth, not the sum over layers.
TEST(ArenaAllocatorTest, ReusesFreedMemoryInStackOrder) {
  alignas(256) static char buffer[1 << 16];
  ArenaAllocator arena(buffer, sizeof(buffer), Device::kCpu);
  Tensor residual(&arena, DType::kF32, {64});  // 256 bytes, lives across the layers
  for (int layer = 0; layer < 10; ++layer) {
    Tensor a(&arena, DType::kF32, {1000});  // 4000 -> 4096 bytes
    Tensor b(&arena, DType::kF32, {100});   // 400 -> 512 bytes
    EXPECT_EQ(static_cast<char*>(a.view().data), buffer + 256) << layer;
    EXPECT_EQ(static_cast<char*>(b.view().data), buffer + 256 + 4096) << layer;
  }
  EXPECT_EQ(arena.used(), 256);
  EXPECT_EQ(arena.peak(), 256 + 4096 + 512);
}

TEST(StackLayoutTest, BlocksFreedOutOfOrderAreReusedOnceTheBlocksAboveGo) {
  StackLayout layout;
  const int64_t a = layout.Push(256), b = layout.Push(512), c = layout.Push(256);
  EXPECT_EQ(a, 0);
  EXPECT_EQ(b, 256);
  EXPECT_EQ(c, 768);
  layout.Pop(b);  // under a live block: nothing to reuse yet
  EXPECT_EQ(layout.top(), 1024);
  EXPECT_EQ(layout.Push(1), 1024);
  layout.Pop(1024);
  layout.Pop(c);  // c goes, and b under it with it
  EXPECT_EQ(layout.top(), 256);
  EXPECT_EQ(layout.Push(100), 256);
  EXPECT_EQ(layout.peak(), 1280);
}

TEST(ArenaAllocatorDeathTest, RunningPastTheEndAborts) {
  alignas(256) static char buffer[1024];
  ArenaAllocator arena(buffer, sizeof(buffer), Device::kCpu);
  arena.Allocate(768);
  EXPECT_DEATH(arena.Allocate(257), "arena of 1024 bytes exhausted");
}

TEST(GraphContextBucketTest, RoundsUpToBucketsThatWasteAtMostAnEighth) {
  const struct {
    int64_t context, bucket;
  } cases[] = {
      {1, 256},       {256, 256},     {257, 512},      {1024, 1024},   {2048, 2048},
      {2049, 2304},   {2304, 2304},   {2305, 2560},    {4095, 4096},   {4097, 4608},
      {100000, 106496}, {163840, 163840}, {163841, 180224},
  };
  for (const auto& c : cases) EXPECT_EQ(GraphContextBucket(c.context), c.bucket) << c.context;
  for (int64_t context = 1; context < 300000; context += 997) {
    const int64_t bucket = GraphContextBucket(context);
    EXPECT_GE(bucket, context);
    if (context > 2048) {
      EXPECT_LE(bucket - context, context / 8) << context;
    }
  }
}

TEST(GraphBatchSizesTest, PowersOfTwoThenSteps) {
  const struct {
    int32_t max;
    std::vector<int32_t> sizes;
  } cases[] = {
      {1, {1}},
      {5, {1, 2, 4, 5}},
      {32, {1, 2, 4, 8, 16, 24, 32}},
      {100, {1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 100}},
      {256, {1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256}},
  };
  for (const auto& c : cases) EXPECT_EQ(GraphBatchSizes(c.max), c.sizes) << c.max;
  EXPECT_TRUE(GraphBatchSizes(0).empty());
}

TEST(PaddedBatchSizeTest, SmallestSizeThatHoldsTheBatch) {
  const std::vector<int32_t> sizes = GraphBatchSizes(256);
  const struct {
    int32_t sequences;
    std::optional<int32_t> padded;
  } cases[] = {{1, 1},     {2, 2},     {3, 4},     {5, 8},           {8, 8},
               {9, 16},    {17, 24},   {25, 32},   {33, 48},         {129, 160},
               {255, 256}, {256, 256}, {257, std::nullopt}};
  for (const auto& c : cases) EXPECT_EQ(PaddedBatchSize(sizes, c.sequences), c.padded) << c.sequences;
  // Padding never costs more than the next size up: at most double below 8, then at most
  // +8 / +16 / +32 sequences.
  for (int32_t b = 1; b <= 256; ++b) {
    const int32_t padded = *PaddedBatchSize(sizes, b);
    EXPECT_GE(padded, b);
    EXPECT_LE(padded - b, b < 8 ? b : b < 32 ? 7 : b < 128 ? 15 : 31) << b;
  }
}

TEST(CaptureArenaBytesTest, GrowsOnlyWhenNeededAndByAQuarterAtLeast) {
  const struct {
    int64_t current, needed, want;
  } cases[] = {{0, 1000, 1000},    {1000, 1000, 1000}, {1000, 10, 1000},
               {1000, 1001, 1250}, {1000, 5000, 5000}};
  for (const auto& c : cases) {
    EXPECT_EQ(CaptureArenaBytes(c.current, c.needed), c.want) << c.current << " " << c.needed;
  }
}

TEST(GraphMemoryBudgetTest, RefusesWhatWouldPassTheLimit) {
  GraphMemoryBudget budget(1000);
  EXPECT_TRUE(budget.Fits(1000));
  EXPECT_FALSE(budget.Fits(1001));
  budget.Add(600);
  EXPECT_TRUE(budget.Fits(400));
  EXPECT_FALSE(budget.Fits(401));
  budget.Remove(200);
  EXPECT_EQ(budget.used(), 400);
  EXPECT_TRUE(budget.Fits(600));
  budget.Remove(5000);  // never below zero
  EXPECT_EQ(budget.used(), 0);
  GraphMemoryBudget unbounded;
  budget.Add(int64_t{1} << 50);
  EXPECT_TRUE(unbounded.Fits(int64_t{1} << 60));
}

}  // namespace
}  // namespace dsv3::backend_graph_memory_test
