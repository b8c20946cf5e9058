// BlockTable: the physical blocks of one sequence's KV cache, in position order. Position p of the
// sequence lives in block blocks()[p / block_size], slot p % block_size. The table holds one
// reference (BlockPool ref_count) on each of its blocks; whoever clears it releases them.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/kv/block_pool.h"

namespace dsv3 {

class BlockTable {
 public:
  absl::Span<const BlockId> blocks() const { return blocks_; }
  int32_t size() const { return static_cast<int32_t>(blocks_.size()); }
  bool empty() const { return blocks_.empty(); }
  BlockId operator[](int32_t i) const { return blocks_[i]; }

  void Append(BlockId id) { blocks_.push_back(id); }
  // Releases the last block to `pool` (a rejected draft's block).
  void ReleaseLast(BlockPool& pool) {
    pool.Release(blocks_.back());
    blocks_.pop_back();
  }

  // Releases every block to `pool`, last block first, so that among cached blocks of the same
  // sequence the later ones (least likely to be shared) are evicted first.
  void ReleaseAll(BlockPool& pool) {
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) pool.Release(*it);
    blocks_.clear();
  }

  // Blocks needed to hold `num_tokens` positions.
  static int32_t BlocksFor(int32_t num_tokens, int32_t block_size) {
    return (num_tokens + block_size - 1) / block_size;
  }

 private:
  std::vector<BlockId> blocks_;
};

}  // namespace dsv3
