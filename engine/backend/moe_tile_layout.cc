#include "engine/backend/moe_tile_layout.h"

namespace dsv3 {

MoeTileLayout BuildMoeTileLayout(std::span<const int32_t> ids, int64_t top_k,
                                 int64_t expert_begin, int64_t experts, int64_t tile_rows) {
  MoeTileLayout layout;
  std::vector<int64_t> count(experts, 0);
  for (int32_t id : ids) {
    const int64_t e = id - expert_begin;
    if (e >= 0 && e < experts) ++count[e];
  }
  // First padded row of each expert, and the tiles' owners.
  std::vector<int64_t> first(experts, 0);
  for (int64_t e = 0; e < experts; ++e) {
    first[e] = layout.rows_padded;
    const int64_t tiles = (count[e] + tile_rows - 1) / tile_rows;
    layout.tile_expert.insert(layout.tile_expert.end(), tiles, static_cast<int32_t>(e));
    layout.rows_padded += tiles * tile_rows;
    if (count[e] > 0) ++layout.active_experts;
  }
  layout.token_of.assign(layout.rows_padded, -1);
  layout.row_of.assign(ids.size(), -1);
  std::vector<int64_t> fill = first;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t e = ids[i] - expert_begin;
    if (e < 0 || e >= experts) continue;
    const int64_t row = fill[e]++;
    layout.token_of[row] = static_cast<int32_t>(static_cast<int64_t>(i) / top_k);
    layout.row_of[i] = static_cast<int32_t>(row);
  }
  // Padding rows: the first token of their tile (every tile has at least one real row).
  for (int64_t r = 0; r < layout.rows_padded; ++r) {
    if (layout.token_of[r] < 0) layout.token_of[r] = layout.token_of[r - r % tile_rows];
  }
  return layout;
}

}  // namespace dsv3
