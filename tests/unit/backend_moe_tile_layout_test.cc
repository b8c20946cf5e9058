// The MoE prefill tile layout (engine/backend/moe_tile_layout.h): every routed row of a local
// expert gets a row in that expert's tiles, rows keep token order within an expert, tiles hold
// one expert each, and padding rows point at a real token of their tile.
#include "engine/backend/moe_tile_layout.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dsv3 {
namespace {

struct Case {
  std::string name;
  std::vector<int32_t> ids;  // [T * top_k]
  int64_t top_k, expert_begin, experts, tile_rows;
  std::vector<int32_t> want_tile_expert;
  std::vector<int32_t> want_row_of;
  int64_t want_active;
};

class MoeTileLayoutTest : public ::testing::TestWithParam<Case> {};

TEST_P(MoeTileLayoutTest, RowsGoToTheirExpertsTiles) {
  const Case& c = GetParam();
  const MoeTileLayout got =
      BuildMoeTileLayout(c.ids, c.top_k, c.expert_begin, c.experts, c.tile_rows);
  EXPECT_EQ(got.tile_expert, c.want_tile_expert);
  EXPECT_EQ(got.row_of, c.want_row_of);
  EXPECT_EQ(got.active_experts, c.want_active);
  ASSERT_EQ(got.rows_padded, static_cast<int64_t>(got.tile_expert.size()) * c.tile_rows);
  ASSERT_EQ(got.token_of.size(), static_cast<size_t>(got.rows_padded));
  // Each routed (token, j) row holds that token; padding rows hold a token of their own tile.
  for (size_t i = 0; i < c.ids.size(); ++i) {
    if (got.row_of[i] >= 0) {
      EXPECT_EQ(got.token_of[got.row_of[i]], static_cast<int32_t>(i / c.top_k)) << "entry " << i;
    }
  }
  for (int64_t r = 0; r < got.rows_padded; ++r) {
    const int64_t tile_first = r - r % c.tile_rows;
    EXPECT_GE(got.token_of[r], 0) << "row " << r;
    bool token_in_tile = false;
    for (size_t i = 0; i < c.ids.size(); ++i) {
      const int32_t row = got.row_of[i];
      if (row >= tile_first && row < tile_first + c.tile_rows &&
          got.token_of[r] == static_cast<int32_t>(i / c.top_k)) {
        token_in_tile = true;
      }
    }
    EXPECT_TRUE(token_in_tile) << "row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, MoeTileLayoutTest,
    ::testing::Values(
        // 3 tokens, top-2 of 4 experts, tiles of 2 rows: expert 0 has tokens 0, 1, 2 (two tiles),
        // expert 1 none, expert 2 token 0, expert 3 tokens 1, 2.
        Case{"uneven", {0, 2, 3, 0, 0, 3}, 2, 0, 4, 2, {0, 0, 2, 3}, {0, 4, 6, 1, 2, 7}, 3},
        // The same routing on a rank holding experts [2, 4): the others' rows are -1.
        Case{"second_rank", {0, 2, 3, 0, 0, 3}, 2, 2, 2, 2, {0, 1}, {-1, 0, 2, -1, -1, 3}, 2},
        // One token, one expert, tiles of 64: one tile, 63 padding rows.
        Case{"one_row", {5}, 1, 0, 8, 64, {5}, {0}, 1},
        // Exactly one full tile: no padding.
        Case{"full_tile", {1, 1, 1, 1}, 1, 0, 2, 4, {1}, {0, 1, 2, 3}, 1},
        // Nothing local.
        Case{"none_local", {0, 1}, 1, 4, 4, 64, {}, {-1, -1}, 0}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace dsv3
