#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "engine/kv/block_pool.h"
#include "engine/kv/block_table.h"

namespace dsv3::kv_block_pool_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int32_t kBlockSize = 4;

BlockHasher TestHasher() { return BlockHasher({11, 22, 33, 44}); }

// Hash chain of the full blocks of `tokens`.
std::vector<BlockHash> Chain(const BlockHasher& hasher, const std::vector<int32_t>& tokens) {
  std::vector<BlockHash> hashes;
  BlockHash parent;
  for (size_t i = 0; i + kBlockSize <= tokens.size(); i += kBlockSize) {
    parent = hasher.Hash(parent, absl::MakeConstSpan(tokens).subspan(i, kBlockSize));
    hashes.push_back(parent);
  }
  return hashes;
}

void ExpectStats(const BlockPool& pool, int32_t free, int32_t evictable, int32_t used,
                 int32_t cached) {
  const BlockPoolStats s = pool.stats();
  EXPECT_EQ(s.num_free, free);
  EXPECT_EQ(s.num_evictable, evictable);
  EXPECT_EQ(s.num_used, used);
  EXPECT_EQ(s.num_cached, cached);
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();
}

TEST(BlockPoolTest, AllocatesInOrderUntilExhaustedAndReusesReleasedBlocks) {
  BlockPool pool(3, kBlockSize, TestHasher());
  ExpectStats(pool, 3, 0, 0, 0);
  EXPECT_EQ(pool.Allocate(), 0);
  EXPECT_EQ(pool.Allocate(), 1);
  EXPECT_EQ(pool.Allocate(), 2);
  EXPECT_EQ(pool.Allocate(), std::nullopt);
  ExpectStats(pool, 0, 0, 3, 0);
  pool.Release(1);
  EXPECT_EQ(pool.ref_count(1), 0);
  ExpectStats(pool, 1, 0, 2, 0);
  EXPECT_EQ(pool.Allocate(), 1);
  EXPECT_EQ(pool.ref_count(1), 1);
}

TEST(BlockPoolTest, CachedBlockIsSharedAndConfirmedByTokenIds) {
  BlockPool pool(4, kBlockSize, TestHasher());
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<BlockHash> hashes = Chain(pool.hasher(), tokens);
  ASSERT_EQ(hashes.size(), 2u);

  const BlockId b0 = *pool.Allocate();
  const BlockId b1 = *pool.Allocate();
  EXPECT_TRUE(pool.Cache(b0, hashes[0], absl::MakeConstSpan(tokens).first(4)));
  EXPECT_TRUE(pool.Cache(b1, hashes[1], absl::MakeConstSpan(tokens).subspan(4, 4)));
  ExpectStats(pool, 2, 0, 2, 2);

  PrefixMatch match = pool.MatchPrefix(hashes, tokens);
  EXPECT_THAT(match.blocks, ElementsAre(b0, b1));
  EXPECT_EQ(match.num_queried, 2);
  EXPECT_EQ(match.num_unreferenced, 0);
  pool.AcquirePrefix(match);
  EXPECT_EQ(pool.ref_count(b0), 2);
  EXPECT_EQ(pool.ref_count(b1), 2);
  EXPECT_EQ(pool.stats().prefix_hit_blocks, 2);
  EXPECT_EQ(pool.stats().prefix_queried_blocks, 2);

  // Same hash, different token ids (what a hash collision would look like): no hit.
  std::vector<int32_t> other = tokens;
  other[5] = 99;
  match = pool.MatchPrefix(hashes, other);
  EXPECT_THAT(match.blocks, ElementsAre(b0));
  EXPECT_EQ(match.num_queried, 2);
}

TEST(BlockPoolTest, SecondBlockWithSameHashIsNotCached) {
  BlockPool pool(2, kBlockSize, TestHasher());
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  const BlockHash h = Chain(pool.hasher(), tokens)[0];
  const BlockId a = *pool.Allocate();
  const BlockId b = *pool.Allocate();
  EXPECT_TRUE(pool.Cache(a, h, tokens));
  EXPECT_FALSE(pool.Cache(b, h, tokens));
  pool.Release(b);
  ExpectStats(pool, 1, 0, 1, 1);
}

TEST(BlockPoolTest, EvictsLeastRecentlyReleasedCachedBlockOnlyWhenFreeListIsEmpty) {
  BlockPool pool(3, kBlockSize, TestHasher());
  const std::vector<int32_t> t0 = {1, 1, 1, 1}, t1 = {2, 2, 2, 2};
  const BlockHash h0 = Chain(pool.hasher(), t0)[0], h1 = Chain(pool.hasher(), t1)[0];
  const BlockId a = *pool.Allocate();
  const BlockId b = *pool.Allocate();
  pool.Cache(a, h0, t0);
  pool.Cache(b, h1, t1);
  pool.Release(b);  // b released first: evicted first
  pool.Release(a);
  ExpectStats(pool, 1, 2, 0, 2);
  EXPECT_EQ(pool.NumAllocatable(), 3);

  EXPECT_EQ(pool.Allocate(), 2);  // the free block, no eviction
  ExpectStats(pool, 0, 2, 1, 2);
  EXPECT_EQ(pool.Allocate(), b);  // evicts b
  ExpectStats(pool, 0, 1, 2, 1);
  EXPECT_TRUE(pool.MatchPrefix({&h1, 1}, t1).blocks.empty());
  EXPECT_THAT(pool.MatchPrefix({&h0, 1}, t0).blocks, ElementsAre(a));
}

TEST(BlockPoolTest, PrefixHitOnEvictableBlockTakesItOffTheLruList) {
  BlockPool pool(2, kBlockSize, TestHasher());
  const std::vector<int32_t> t0 = {1, 2, 3, 4};
  const BlockHash h0 = Chain(pool.hasher(), t0)[0];
  const BlockId a = *pool.Allocate();
  pool.Cache(a, h0, t0);
  pool.Release(a);
  const PrefixMatch match = pool.MatchPrefix({&h0, 1}, t0);
  EXPECT_EQ(match.num_unreferenced, 1);
  pool.AcquirePrefix(match);
  ExpectStats(pool, 1, 0, 1, 1);
  EXPECT_EQ(pool.Allocate(), 1);
  EXPECT_EQ(pool.Allocate(), std::nullopt);  // the shared block is not evictable while used
}

TEST(BlockPoolTest, BlockTableReleasesLastBlockFirst) {
  BlockPool pool(3, kBlockSize, TestHasher());
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<BlockHash> hashes = Chain(pool.hasher(), tokens);
  BlockTable table;
  for (int i = 0; i < 2; ++i) {
    table.Append(*pool.Allocate());
    pool.Cache(table[i], hashes[i], absl::MakeConstSpan(tokens).subspan(4 * i, 4));
  }
  table.ReleaseAll(pool);
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(pool.Allocate(), 2);
  EXPECT_EQ(pool.Allocate(), 1);  // the second block of the sequence goes first
  EXPECT_THAT(pool.MatchPrefix(hashes, tokens).blocks, ElementsAre(0));
}

TEST(BlockTableTest, BlocksFor) {
  struct Row {
    int32_t tokens, block_size, blocks;
  };
  for (const Row& r :
       {Row{0, 4, 0}, Row{1, 4, 1}, Row{4, 4, 1}, Row{5, 4, 2}, Row{64, 64, 1}, Row{129, 64, 3}}) {
    EXPECT_EQ(BlockTable::BlocksFor(r.tokens, r.block_size), r.blocks) << r.tokens;
  }
}

TEST(NumBlocksForBudgetTest, Table) {
  struct Row {
    int64_t budget;
    int32_t block_size;
    int64_t layers, bytes_per_token;
    int32_t blocks;     // when ok
    const char* error;  // substring, or nullptr when ok
  };
  const int64_t v3 = Bf16LatentBytesPerToken(512, 64);
  EXPECT_EQ(v3, 1152);
  const Row rows[] = {
      {64LL * 61 * 1152 * 10, 64, 61, v3, 10, nullptr},
      {64LL * 61 * 1152 * 10 + 5, 64, 61, v3, 10, nullptr},
      {int64_t{100} << 30, 64, 61, v3, 23'874, nullptr},
      {1000, 64, 61, v3, 0, "holds no block"},
      {1 << 20, 0, 61, v3, 0, "block_size"},
      {1 << 20, 64, 0, v3, 0, "num_layers"},
      {1 << 20, 64, 61, 0, 0, "bytes_per_token"},
      {int64_t{1} << 62, 1, 1, 1, 0, "block id"},
  };
  for (const Row& r : rows) {
    absl::StatusOr<int32_t> blocks =
        NumBlocksForBudget(r.budget, r.block_size, r.layers, r.bytes_per_token);
    if (r.error == nullptr) {
      ASSERT_TRUE(blocks.ok()) << blocks.status();
      EXPECT_EQ(*blocks, r.blocks);
    } else {
      ASSERT_FALSE(blocks.ok());
      EXPECT_EQ(blocks.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(blocks.status().message(), HasSubstr(r.error));
    }
  }
}

}  // namespace
}  // namespace dsv3::kv_block_pool_test
