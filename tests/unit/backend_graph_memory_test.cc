// Host logic that CUDA graphs rely on (engine/backend/cuda/cuda_graphs.cc), checked without a
// GPU: the arena gives a repeated sequence of allocations the same addresses (a captured graph
// reads its temporaries and its step plan where it saw them), and the context buckets that
// decode attention pads to in a graph step.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "engine/backend/arena_allocator.h"
#include "engine/backend/cuda/graph_policy.h"
#include "engine/backend/tensor.h"

namespace dsv3 {
namespace {

TEST(ArenaAllocatorTest, RepeatedAllocationsGetTheSameAlignedAddresses) {
  alignas(256) static char buffer[1 << 16];
  ArenaAllocator arena(buffer, sizeof(buffer), Device::kCpu);
  const std::vector<int64_t> sizes = {1, 300, 256, 0, 4097, 12};
  std::vector<void*> first;
  for (int round = 0; round < 3; ++round) {
    arena.Reset();
    std::vector<void*> got;
    {
      // Tensors made and freed in between change nothing: frees are no-ops.
      Tensor scratch(&arena, DType::kF32, {7});
      got.push_back(scratch.view().data);
    }
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
  // 256 (scratch) + 256 + 512 + 256 + 256 + 4352 + 256 bytes, each rounded up to 256.
  EXPECT_EQ(arena.used(), 256 + 256 + 512 + 256 + 256 + 4352 + 256);
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
    if (context > 2048) EXPECT_LE(bucket - context, context / 8) << context;
  }
}

}  // namespace
}  // namespace dsv3
