#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "engine/kv/block_hash.h"

namespace dsv3::kv_block_hash_test {
namespace {

// Reference vectors of SipHash-2-4: key 00 01 .. 0f, message 00 01 .. (len - 1).
TEST(SipHash24Test, MatchesReferenceVectors) {
  struct Row {
    size_t length;
    uint64_t expected;
  };
  const Row rows[] = {
      {0, 0x726fdb47dd0e0e31ULL},
      {1, 0x74f839c593dc67fdULL},
      {8, 0x93f5f5799a932462ULL},
      {15, 0xa129ca6149be45e5ULL},
  };
  std::vector<uint8_t> message(16);
  for (size_t i = 0; i < message.size(); ++i) message[i] = static_cast<uint8_t>(i);
  const uint64_t k0 = 0x0706050403020100ULL;
  const uint64_t k1 = 0x0f0e0d0c0b0a0908ULL;
  for (const Row& row : rows) {
    EXPECT_EQ(SipHash24(k0, k1, absl::MakeConstSpan(message).first(row.length)), row.expected)
        << "length " << row.length;
  }
}

TEST(BlockHasherTest, DependsOnKeyParentAndEveryToken) {
  const BlockHasher a({1, 2, 3, 4});
  const BlockHasher b({1, 2, 3, 5});
  const std::vector<int32_t> tokens = {10, 20, 30, 40};
  const BlockHash h = a.Hash(BlockHash{}, tokens);

  EXPECT_EQ(h, a.Hash(BlockHash{}, tokens));
  EXPECT_NE(h.lo, 0u);
  EXPECT_NE(h, b.Hash(BlockHash{}, tokens));
  EXPECT_NE(h, a.Hash(BlockHash{1, 0}, tokens));
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::vector<int32_t> changed = tokens;
    ++changed[i];
    EXPECT_NE(h, a.Hash(BlockHash{}, changed)) << "token " << i;
  }
}

TEST(BlockHasherTest, RandomKeysDiffer) {
  const std::vector<int32_t> tokens = {1, 2, 3};
  EXPECT_NE(BlockHasher::WithRandomKey().Hash(BlockHash{}, tokens),
            BlockHasher::WithRandomKey().Hash(BlockHash{}, tokens));
}

TEST(BlockHasherTest, NoCollisionsAmongManySmallBlocks) {
  const BlockHasher hasher({7, 7, 7, 7});
  absl::flat_hash_set<BlockHash> seen;
  for (int32_t a = 0; a < 100; ++a) {
    for (int32_t b = 0; b < 100; ++b) {
      const int32_t tokens[] = {a, b};
      EXPECT_TRUE(seen.insert(hasher.Hash(BlockHash{}, tokens)).second);
    }
  }
}

}  // namespace
}  // namespace dsv3::kv_block_hash_test
