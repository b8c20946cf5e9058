// How the flash decode kernel (kernels/flash_mla_decode.cu) divides a launch's keys, FlashMLA's
// tile scheduler: the items' 64-key tiles, item after item, form one sequence of `total` tiles,
// cut into `parts` equal ranges (part q: tiles [total q / parts, total (q + 1) / parts)). A
// block takes one part for one group of 64 heads, item by item: an item that a cut splits gets
// a piece per part that holds some of it, each written to a slot of partial outputs and merged
// afterwards; every other item is written whole. Equal ranges keep every SM equally busy at any
// batch and mix of contexts, where cutting each item into the same number of ranges left SMs
// idle (128 of 132 blocks at 32 items of 2 head groups) or ran short blocks in a second wave.
//
// Plain C++ on integers, for the kernel, the merge and the host (the backend's choice of parts,
// and tests/unit/kernels_flash_cut_test.cc, which walks every part as the kernel does).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/host_device.h"

namespace dsv3::kernels {

// Keys per tile: the unit the cut counts in.
constexpr int32_t kFlashDecodeTileKeys = 64;
// The most parts a launch takes.
constexpr int32_t kFlashDecodeMaxParts = 256;

DSV3_HOST_DEVICE constexpr int32_t FlashDecodeTiles(int32_t context) {
  return (context + kFlashDecodeTileKeys - 1) / kFlashDecodeTileKeys;
}

// A launch's cut: `total` tiles in `parts` ranges, none empty (MakeFlashCut).
struct FlashCut {
  int32_t total, parts;
  DSV3_HOST_DEVICE int32_t Begin(int q) const {
    return static_cast<int32_t>(int64_t{total} * q / parts);
  }
  // The part holding tile u.
  DSV3_HOST_DEVICE int PartOf(int32_t u) const {
    return static_cast<int>((int64_t{u + 1} * parts - 1) / total);
  }
  // Two slots of partial outputs per part: a piece in part q goes to slot 2 q + 1 when it
  // reaches the part's end, else to slot 2 q (then it is the part's first piece, of an item
  // begun in an earlier part; a part's other pieces are whole items).
  DSV3_HOST_DEVICE int PieceSlot(int q, int32_t end) const {
    return 2 * q + (end == Begin(q + 1) ? 1 : 0);
  }
};
// The cut of `total` (>= 1) tiles into at most `parts`: no more parts than tiles, so that each
// holds at least one.
DSV3_HOST_DEVICE FlashCut MakeFlashCut(int32_t total, int32_t parts) {
  return {total, parts < total ? parts : total};
}

// The piece of the item with tiles [item_begin, item_end) in part q: its tiles [begin, end) and
// its slot, -1 when the item is whole in the part and not `always_slot` (written to out). False
// when the item and the part do not meet.
struct FlashPiece {
  int32_t begin, end;
  int slot;
};
DSV3_HOST_DEVICE bool PieceOfItem(const FlashCut& cut, int q, int32_t item_begin,
                                  int32_t item_end, bool always_slot, FlashPiece& piece) {
  const int32_t part_begin = cut.Begin(q), part_end = cut.Begin(q + 1);
  piece.begin = item_begin > part_begin ? item_begin : part_begin;
  piece.end = item_end < part_end ? item_end : part_end;
  if (piece.begin >= piece.end) return false;
  const bool whole = piece.begin == item_begin && piece.end == item_end && !always_slot;
  piece.slot = whole ? -1 : cut.PieceSlot(q, piece.end);
  return true;
}

// The parts holding the item with tiles [begin, end): [first, last]; piece k of it (part first +
// k) is in slot Slot(k).
struct FlashItemPieces {
  FlashCut cut;
  int32_t begin, end;
  int first, last;
  DSV3_HOST_DEVICE int Count() const { return last - first + 1; }
  DSV3_HOST_DEVICE int Slot(int k) const {
    const int q = first + k;
    const int32_t part_end = cut.Begin(q + 1);
    return cut.PieceSlot(q, end < part_end ? end : part_end);
  }
};
DSV3_HOST_DEVICE FlashItemPieces PiecesOfItem(const FlashCut& cut, int32_t begin, int32_t end) {
  return {cut, begin, end, cut.PartOf(begin), cut.PartOf(end - 1)};
}

// A launch of one block per item and head group, each item whole: no cut, no merge (the
// combine kernel's launch, whose blocks each check an item, costs more than it saves where the
// items already fill the SMs).
constexpr int32_t kFlashDecodePerItem = 0;

// The parts for `items` items of `heads` heads attending at most `max_context` keys on a GPU of
// `sms` multiprocessors (one block per SM fits), or kFlashDecodePerItem: least time by a model
// counting waves of blocks times each block's tiles plus its fixed costs in tiles: a query load
// per piece (1) and, where a cut may split an item, the partial output [64, 512] F32 written and
// read back (3); a cut of more than one part also runs the combine kernel (1). Parts of whole
// items (parts divides items) split none under equal contexts; any other cut splits some, and a
// part may then hold a piece more than its tiles would fill with whole items. Ties go to one
// block per item.
inline int32_t FlashMlaDecodeParts(int64_t items, int64_t heads, int64_t max_context, int sms) {
  const int64_t tiles = std::max<int64_t>(
      1, FlashDecodeTiles(static_cast<int32_t>(std::min<int64_t>(max_context, INT32_MAX - 64))));
  const int64_t total = items * tiles, groups = (heads + 63) / 64;
  // Waves of `blocks` blocks, each of `per` tiles and `pieces` query loads.
  auto cost = [&](int64_t blocks, int64_t per, int64_t pieces, bool splits, bool combines) {
    return (blocks + sms - 1) / sms * (per + pieces + (splits ? 3 : 0)) + (combines ? 1 : 0);
  };
  int32_t best = kFlashDecodePerItem;
  int64_t best_cost = cost(items * groups, tiles, 1, false, false);
  for (int64_t parts = 1; parts <= std::min<int64_t>(total, kFlashDecodeMaxParts); ++parts) {
    const int64_t per = (total + parts - 1) / parts;
    const bool splits = items % parts != 0;
    const int64_t pieces = std::min(items, (per + tiles - 1) / tiles + (splits ? 1 : 0));
    const int64_t c = cost(parts * groups, per, pieces, splits, parts > 1);
    if (c < best_cost) {
      best_cost = c;
      best = static_cast<int32_t>(parts);
    }
  }
  return best;
}

}  // namespace dsv3::kernels
