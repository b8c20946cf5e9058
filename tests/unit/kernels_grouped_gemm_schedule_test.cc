// The prefill grouped GEMM's walk over its work (kernels/grouped_gemm_schedule.h), on the host
// as the kernel walks it: every tile meets every column block exactly once, and items go expert
// by expert (the weights of one expert are read by items next to each other, tile fastest).
#include <cstdint>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/grouped_gemm_schedule.h"

namespace dsv3::kernels::kernels_grouped_gemm_schedule_test {
namespace {

struct Layout {
  std::vector<int32_t> tile_expert;  // experts' tiles, adjacent, experts ascending
  int64_t mats, blocks_per_mat;
  int64_t item_cols = kGroupedItemCols;  // 128: the SwiGLU output's items
};

// Tiles of experts with tiles_of[e] tiles each (0 allowed).
std::vector<int32_t> Tiles(const std::vector<int>& tiles_of) {
  std::vector<int32_t> tile_expert;
  for (size_t e = 0; e < tiles_of.size(); ++e) {
    tile_expert.insert(tile_expert.end(), tiles_of[e], static_cast<int32_t>(e));
  }
  return tile_expert;
}

using Cell = std::tuple<int64_t, int64_t, int64_t>;  // tile, matrix, col0

// seen: the cells of tiles x blocks items; as many distinct cells as items means none twice.
void ExpectEveryCellOnce(const std::set<Cell>& seen, const Layout& l) {
  const int64_t tiles = static_cast<int64_t>(l.tile_expert.size());
  EXPECT_EQ(static_cast<int64_t>(seen.size()), tiles * l.mats * l.blocks_per_mat)
      << "a cell visited twice or never";
  for (const auto& [tile, m, col0] : seen) {
    EXPECT_TRUE(tile >= 0 && tile < tiles && m >= 0 && m < l.mats && col0 >= 0 &&
                col0 < l.blocks_per_mat * l.item_cols && col0 % l.item_cols == 0);
  }
}

void CheckWalk(const Layout& l) {
  const int64_t tiles = static_cast<int64_t>(l.tile_expert.size());
  const int64_t blocks = l.mats * l.blocks_per_mat;
  std::set<Cell> seen;
  int32_t last_expert = -1;
  for (int64_t w = 0; w < tiles * blocks; ++w) {
    const GroupedItem it =
        DecodeGroupedItem(w, l.tile_expert.data(), tiles, l.blocks_per_mat, blocks, l.item_cols);
    seen.insert({it.tile, it.m, it.col0});
    const int32_t e = l.tile_expert[it.tile];
    EXPECT_GE(e, last_expert) << "item " << w << " goes back to an earlier expert";
    last_expert = e;
    if (w > 0) {  // tile fastest: the item before is this one's tile - 1 or another column
      const GroupedItem prev = DecodeGroupedItem(w - 1, l.tile_expert.data(), tiles,
                                                 l.blocks_per_mat, blocks, l.item_cols);
      if (l.tile_expert[prev.tile] == e && prev.m == it.m && prev.col0 == it.col0) {
        EXPECT_EQ(prev.tile + 1, it.tile) << "item " << w;
      }
    }
  }
  ExpectEveryCellOnce(seen, l);
}

TEST(GroupedGemmScheduleTest, EveryCellOnceExpertByExpert) {
  // Experts of 0 to 5 tiles; V3's gate|up (2 matrices of 8 column blocks) and down (28 blocks);
  // a single tile; column blocks spanning two matrices (3 + 3 blocks).
  const std::vector<Layout> layouts = {
      {Tiles({1, 2, 0, 3, 1, 5}), 2, 1},
      {Tiles({1, 2, 0, 3, 1, 5}), 2, 3},
      {Tiles({3, 0, 2, 2}), 2, 8},
      {Tiles({1, 4, 3}), 1, 28},
      {Tiles({1}), 1, 2},
      {Tiles({0, 7}), 1, 4},
      {Tiles({3, 0, 2, 2}), 1, 16, 128},  // V3's SwiGLU output: 16 blocks of 128
      {Tiles({1, 2, 0, 3, 1, 5}), 1, 4, 128},
  };
  for (const Layout& l : layouts) {
    SCOPED_TRACE(::testing::Message() << l.tile_expert.size() << " tiles, " << l.mats << " x "
                                    << l.blocks_per_mat << " column blocks of " << l.item_cols);
    CheckWalk(l);
  }
}

TEST(GroupedGemmScheduleTest, RandomLayouts) {
  std::mt19937 rng(39);
  std::uniform_int_distribution<int> experts(1, 12), tiles_of(0, 7), mats(1, 2), per_mat(1, 6);
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<int> tiles(experts(rng));
    for (int& t : tiles) t = tiles_of(rng);
    Layout l{Tiles(tiles), mats(rng), per_mat(rng)};
    if (l.tile_expert.empty()) continue;
    SCOPED_TRACE(::testing::Message() << "trial " << trial);
    CheckWalk(l);
  }
}

}  // namespace
}  // namespace dsv3::kernels::kernels_grouped_gemm_schedule_test
