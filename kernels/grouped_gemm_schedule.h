// The order in which the prefill grouped FP8 GEMM (kernels/fp8_grouped_gemm.cu) walks its
// work: plain C++ on integers, for the kernel and for
// tests/unit/kernels_grouped_gemm_schedule_test.cc, which walks every item as the kernel does.
//
// The rows are tiles of 64 (tile_expert[t]: the expert of tile t; tiles of one expert
// adjacent), the columns `blocks` column blocks of 256 over all matrices (blocks_per_mat per
// matrix). An item is one tile against one column block. Items run expert by expert: for each
// run of an expert's tiles, all its column blocks, tile fastest, so that the blocks running at
// one time cover the tiles of one or a few experts against the same weight columns and each
// weight tile comes from DRAM once, the rest from L2. (Groups of a fixed number of tiles would
// split experts between groups running in different waves, each reading the expert's weights
// from DRAM.)
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace dsv3::kernels {

constexpr int64_t kGroupedItemCols = 256;  // columns per item

struct GroupedItem {
  int64_t tile, m, col0;  // col0: first column of the item within matrix m
};

DSV3_HOST_DEVICE int32_t LoadTileExpert(const int32_t* at) {
#if defined(__CUDA_ARCH__)
  return __ldg(at);
#else
  return *at;
#endif
}

// The run of tiles [first, end) of tile t0's expert: a scan as long as the run, a few tiles at
// prefill sizes.
struct TileRun {
  int64_t first, end;
};
DSV3_HOST_DEVICE TileRun RunOfTile(int64_t t0, const int32_t* tile_expert, int64_t num_tiles) {
  const int32_t e = LoadTileExpert(tile_expert + t0);
  int64_t first = t0, end = t0 + 1;
  while (first > 0 && LoadTileExpert(tile_expert + first - 1) == e) --first;
  while (end < num_tiles && LoadTileExpert(tile_expert + end) == e) ++end;
  return {first, end};
}

// Item w of the kernel (num_tiles * blocks items of item_cols columns): the run of tiles
// [first, end) spans the items [first * blocks, end * blocks), so item w lies in the run holding
// tile w / blocks. (The SwiGLU output's items are 128 columns of gate and up each: one matrix
// of blocks of 128 to the schedule.)
DSV3_HOST_DEVICE GroupedItem DecodeGroupedItem(int64_t w, const int32_t* tile_expert,
                                               int64_t num_tiles, int64_t blocks_per_mat,
                                               int64_t blocks, int64_t item_cols) {
  const TileRun run = RunOfTile(w / blocks, tile_expert, num_tiles);
  const int64_t tiles = run.end - run.first, rem = w - run.first * blocks, b = rem / tiles;
  return {run.first + rem % tiles, b / blocks_per_mat, b % blocks_per_mat * item_cols};
}

}  // namespace dsv3::kernels
