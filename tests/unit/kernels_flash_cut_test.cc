// The flash decode kernel's cut of a launch's keys into parts (kernels/flash_mla_cut.h), walked
// on the host as the kernel walks it (each part from the item holding its first tile, item by
// item, PieceOfItem) and as the merge reads it (each split item's pieces, PiecesOfItem): every
// tile of every item is attended exactly once, every slot of partial outputs is written by one
// piece and read by the merge of that piece's item, in key order; and FlashMlaDecodeParts keeps
// every SM busy at long contexts, where cutting each item alike left some idle.
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/flash_mla_cut.h"

namespace dsv3::kernels::kernels_flash_cut_test {
namespace {

struct Written {
  int item;
  int32_t begin, end;  // tiles of the launch
};

// The whole check for one launch: items of `contexts` keys cut into at most `parts`.
void CheckCut(const std::vector<int32_t>& contexts, int32_t parts, bool always_slot) {
  SCOPED_TRACE(::testing::Message() << contexts.size() << " items, " << parts << " parts"
                                  << (always_slot ? ", always slots" : ""));
  const int n = static_cast<int>(contexts.size());
  std::vector<int32_t> begin(n + 1, 0);
  for (int i = 0; i < n; ++i) begin[i + 1] = begin[i] + FlashDecodeTiles(contexts[i]);
  const int32_t total = begin[n];
  const FlashCut cut = MakeFlashCut(total, parts);
  ASSERT_GE(cut.parts, 1);
  ASSERT_LE(cut.parts, std::min(parts, total));

  std::vector<std::vector<int>> attended(n);
  for (int i = 0; i < n; ++i) attended[i].assign(FlashDecodeTiles(contexts[i]), 0);
  std::map<int, Written> slots;
  std::vector<bool> whole(n, false);
  for (int q = 0; q < cut.parts; ++q) {
    const int32_t part_begin = cut.Begin(q), part_end = cut.Begin(q + 1);
    ASSERT_LT(part_begin, part_end) << "part " << q << " is empty";
    // Equal parts: each total / parts tiles, rounded either way.
    EXPECT_LE(part_end - part_begin, (total + cut.parts - 1) / cut.parts) << "part " << q;
    EXPECT_GE(part_end - part_begin, total / cut.parts) << "part " << q;
    EXPECT_EQ(cut.PartOf(part_begin), q);
    EXPECT_EQ(cut.PartOf(part_end - 1), q);
    int first = 0;
    while (begin[first + 1] <= part_begin) ++first;
    int pieces = 0;
    FlashPiece piece;
    for (int i = first;
         i < n && PieceOfItem(cut, q, begin[i], begin[i + 1], always_slot, piece); ++i) {
      ++pieces;
      for (int32_t u = piece.begin; u < piece.end; ++u) ++attended[i][u - begin[i]];
      if (piece.slot < 0) {
        EXPECT_FALSE(always_slot);
        EXPECT_EQ(piece.begin, begin[i]);
        EXPECT_EQ(piece.end, begin[i + 1]);
        whole[i] = true;
        continue;
      }
      EXPECT_TRUE(piece.slot == 2 * q || piece.slot == 2 * q + 1) << "slot " << piece.slot;
      EXPECT_TRUE(slots.emplace(piece.slot, Written{i, piece.begin, piece.end}).second)
          << "slot " << piece.slot << " written twice";
    }
    EXPECT_GE(pieces, 1) << "part " << q;
  }
  for (int i = 0; i < n; ++i) {
    for (size_t u = 0; u < attended[i].size(); ++u) {
      ASSERT_EQ(attended[i][u], 1) << "item " << i << " tile " << u;
    }
  }

  // The merges: every split item reads its pieces' slots in key order, and nothing else.
  int read = 0;
  for (int i = 0; i < n; ++i) {
    const FlashItemPieces pieces = PiecesOfItem(cut, begin[i], begin[i + 1]);
    ASSERT_GE(pieces.Count(), 1);
    if (whole[i]) {
      EXPECT_EQ(pieces.Count(), 1) << "item " << i << " written whole and in pieces";
      continue;
    }
    int32_t next = begin[i];
    for (int k = 0; k < pieces.Count(); ++k) {
      const auto it = slots.find(pieces.Slot(k));
      ASSERT_NE(it, slots.end()) << "item " << i << " reads unwritten slot " << pieces.Slot(k);
      EXPECT_EQ(it->second.item, i);
      EXPECT_EQ(it->second.begin, next) << "item " << i << " piece " << k;
      next = it->second.end;
      ++read;
    }
    EXPECT_EQ(next, begin[i + 1]) << "item " << i;
  }
  EXPECT_EQ(read, static_cast<int>(slots.size())) << "slots written that no merge reads";
}

TEST(FlashCutTest, EveryTileOnceEverySlotWrittenOnceAndMerged) {
  // Ragged contexts: one key, a partial last tile, whole tiles, a long item.
  const std::vector<int32_t> ragged = {1, 700, 64, 4097, 130};
  for (const int32_t parts : {1, 2, 3, 5, 17, 80, 81, 100, 256}) {
    CheckCut(ragged, parts, /*always_slot=*/false);
  }
  // One item, as a one-token step that leaves the merge to W_UV's kernel cuts it.
  for (const int32_t context : {1, 64, 65, 1024, 20001, 65536}) {
    for (const int32_t parts : {1, 2, 16, 66, 256}) CheckCut({context}, parts, true);
  }
  // Equal contexts: parts dividing the items split none; others split some.
  for (const int32_t parts : {1, 4, 8, 32, 33, 64, 66}) {
    CheckCut(std::vector<int32_t>(32, 1024), parts, false);
  }
  std::mt19937 rng(5);
  for (int round = 0; round < 200; ++round) {
    std::vector<int32_t> contexts(1 + rng() % 64);
    for (int32_t& c : contexts) c = 1 + static_cast<int32_t>(rng() % (rng() % 2 ? 200 : 9000));
    CheckCut(contexts, 1 + static_cast<int32_t>(rng() % kFlashDecodeMaxParts), false);
  }
}

TEST(FlashCutTest, WholeItemsWrittenWholeWhenPartsDivideEqualItems) {
  const FlashCut cut = MakeFlashCut(32 * 16, 8);  // 32 items of 16 tiles, 4 to a part
  for (int q = 0; q < cut.parts; ++q) {
    for (int i = 4 * q; i < 4 * q + 4; ++i) {
      FlashPiece piece;
      ASSERT_TRUE(PieceOfItem(cut, q, 16 * i, 16 * i + 16, false, piece));
      EXPECT_EQ(piece.slot, -1) << "item " << i;
    }
  }
}

// Long contexts, where a launch's tiles far outnumber its blocks: the chosen parts take at most
// 2% + 1 tile longer than the launch's tiles spread evenly over every SM would (waves x the
// longest part). Cutting every item alike took 3% longer at 32 items (128 of 132 blocks busy)
// and 37% at 24 (96 blocks).
TEST(FlashCutTest, PartsKeepEverySmBusyAtLongContexts) {
  constexpr int kSms = 132;
  struct Shape {
    int64_t items, context, heads;
  };
  for (const Shape s : {Shape{32, 65536, 128}, Shape{24, 16384, 128}, Shape{3, 65536, 128},
                        Shape{8, 65536, 128}, Shape{32, 16384, 128}, Shape{1, 65536, 128},
                        Shape{32, 65536, 64}, Shape{5, 30000, 64}}) {
    const int32_t parts = FlashMlaDecodeParts(s.items, s.heads, s.context, kSms);
    ASSERT_GE(parts, kFlashDecodePerItem);
    ASSERT_LE(parts, kFlashDecodeMaxParts);
    const int64_t groups = (s.heads + 63) / 64;
    const int64_t tiles = FlashDecodeTiles(static_cast<int32_t>(s.context));
    const int64_t total = s.items * tiles;
    const int64_t blocks = (parts == kFlashDecodePerItem ? s.items : parts) * groups;
    const int64_t waves = (blocks + kSms - 1) / kSms;
    const int64_t longest =
        waves * (parts == kFlashDecodePerItem ? tiles : (total + parts - 1) / parts);
    const double even = static_cast<double>(total * groups) / kSms;
    EXPECT_LE(longest, even * 1.02 + 1)
        << s.items << " x " << s.context << ", " << s.heads << " heads: " << parts << " parts";
  }
}

// Many short items, already more blocks than SMs: one block per item, whole, and no combine
// kernel (a cut would add the combine's launch and split items for no better balance).
TEST(FlashCutTest, ManyShortItemsTakeOneBlockEach) {
  EXPECT_EQ(FlashMlaDecodeParts(128, 128, 1024, 132), kFlashDecodePerItem);
  EXPECT_EQ(FlashMlaDecodeParts(256, 128, 512, 132), kFlashDecodePerItem);
  EXPECT_NE(FlashMlaDecodeParts(1, 128, 1024, 132), kFlashDecodePerItem);
}

}  // namespace
}  // namespace dsv3::kernels::kernels_flash_cut_test
