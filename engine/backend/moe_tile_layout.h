// Where each routed (token, expert) row goes in a MoE prefill step's grouped expert GEMMs
// (engine/backend/cuda/cuda_moe_prefill.cc): rows grouped expert by expert, each expert's rows
// padded to whole tiles, so that one tile of the GEMM belongs to one expert and reads one
// expert's weights. Host logic only (the prefill path synchronizes once per MoE layer to read
// the router's choices), so that unit tests pin it without a GPU.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dsv3 {

struct MoeTileLayout {
  int64_t rows_padded = 0;           // tiles * tile_rows
  std::vector<int32_t> tile_expert;  // [tiles] local expert of rows [tile * tile_rows, +tile_rows)
  // [rows_padded] token whose hidden state row r holds; padding rows repeat their tile's first
  // token (finite data whose outputs nothing reads).
  std::vector<int32_t> token_of;
  // [T * top_k] padded row of each (token, j) routed to a local expert, -1 for other ranks'.
  std::vector<int32_t> row_of;
  int64_t active_experts = 0;  // local experts with at least one row
};

// ids [T * top_k]: global expert ids as the router wrote them. Local experts are
// [expert_begin, expert_begin + experts). Within an expert, rows keep token order.
MoeTileLayout BuildMoeTileLayout(std::span<const int32_t> ids, int64_t top_k,
                                 int64_t expert_begin, int64_t experts, int64_t tile_rows);

}  // namespace dsv3
