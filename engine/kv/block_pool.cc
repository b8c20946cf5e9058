#include "engine/kv/block_pool.h"

#include <algorithm>
#include <cassert>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dsv3 {

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size, BlockHasher hasher)
    : block_size_(block_size), hasher_(std::move(hasher)), blocks_(num_blocks) {
  assert(num_blocks >= 1 && block_size >= 1);
  for (BlockId id = 0; id < num_blocks; ++id) free_.push_back(id);
}

int32_t BlockPool::NumAllocatable() const {
  return static_cast<int32_t>(free_.size() + lru_.size());
}

std::optional<BlockId> BlockPool::Allocate() {
  BlockId id;
  if (!free_.empty()) {
    id = free_.front();
    free_.pop_front();
  } else if (!lru_.empty()) {
    id = lru_.front();
    lru_.pop_front();
    Uncache(id);
  } else {
    return std::nullopt;
  }
  blocks_[id].ref_count = 1;
  return id;
}

void BlockPool::Release(BlockId id) {
  Block& block = blocks_[id];
  assert(block.ref_count > 0);
  if (--block.ref_count > 0) return;
  if (block.cached) {
    block.lru_position = lru_.insert(lru_.end(), id);
  } else {
    free_.push_back(id);
  }
}

int32_t BlockPool::ref_count(BlockId id) const { return blocks_[id].ref_count; }

PrefixMatch BlockPool::MatchPrefix(absl::Span<const BlockHash> hashes,
                                   absl::Span<const int32_t> tokens) const {
  assert(tokens.size() >= hashes.size() * block_size_);
  PrefixMatch match;
  for (size_t i = 0; i < hashes.size(); ++i) {
    ++match.num_queried;
    auto it = cache_.find(hashes[i]);
    if (it == cache_.end()) break;
    const Block& block = blocks_[it->second];
    absl::Span<const int32_t> expected = tokens.subspan(i * block_size_, block_size_);
    if (!std::equal(expected.begin(), expected.end(), block.tokens.begin(), block.tokens.end())) {
      break;
    }
    match.blocks.push_back(it->second);
    if (block.ref_count == 0) ++match.num_unreferenced;
  }
  return match;
}

void BlockPool::AcquirePrefix(const PrefixMatch& match) {
  for (BlockId id : match.blocks) {
    Block& block = blocks_[id];
    assert(block.cached);
    if (block.ref_count++ == 0) lru_.erase(block.lru_position);
  }
  prefix_queried_blocks_ += match.num_queried;
  prefix_hit_blocks_ += static_cast<int64_t>(match.blocks.size());
}

bool BlockPool::Cache(BlockId id, const BlockHash& hash, absl::Span<const int32_t> tokens) {
  Block& block = blocks_[id];
  assert(block.ref_count > 0 && !block.cached);
  assert(static_cast<int32_t>(tokens.size()) == block_size_);
  if (!cache_.try_emplace(hash, id).second) return false;
  block.cached = true;
  block.hash = hash;
  block.tokens.assign(tokens.begin(), tokens.end());
  return true;
}

void BlockPool::Uncache(BlockId id) {
  Block& block = blocks_[id];
  cache_.erase(block.hash);
  block.cached = false;
  block.tokens.clear();
}

BlockPoolStats BlockPool::stats() const {
  BlockPoolStats s;
  s.num_blocks = num_blocks();
  s.num_free = static_cast<int32_t>(free_.size());
  s.num_evictable = static_cast<int32_t>(lru_.size());
  s.num_used = s.num_blocks - s.num_free - s.num_evictable;
  s.num_cached = static_cast<int32_t>(cache_.size());
  s.prefix_queried_blocks = prefix_queried_blocks_;
  s.prefix_hit_blocks = prefix_hit_blocks_;
  return s;
}

absl::Status BlockPool::CheckInvariants() const {
  const int32_t n = num_blocks();
  std::vector<int> on_free(n, 0), on_lru(n, 0);
  for (BlockId id : free_) {
    if (id < 0 || id >= n) return absl::InternalError(absl::StrCat("free list holds id ", id));
    ++on_free[id];
  }
  for (BlockId id : lru_) {
    if (id < 0 || id >= n) return absl::InternalError(absl::StrCat("LRU list holds id ", id));
    ++on_lru[id];
  }
  int32_t num_cached = 0;
  for (BlockId id = 0; id < n; ++id) {
    const Block& b = blocks_[id];
    const int expected_free = b.ref_count == 0 && !b.cached;
    const int expected_lru = b.ref_count == 0 && b.cached;
    if (b.ref_count < 0 || on_free[id] != expected_free || on_lru[id] != expected_lru) {
      return absl::InternalError(absl::StrCat("block ", id, ": ref_count ", b.ref_count,
                                              ", cached ", b.cached, ", on free list ", on_free[id],
                                              "x, on LRU list ", on_lru[id], "x"));
    }
    if (expected_lru && *b.lru_position != id) {
      return absl::InternalError(absl::StrCat("block ", id, ": stale LRU position"));
    }
    if (b.cached) {
      ++num_cached;
      auto it = cache_.find(b.hash);
      if (it == cache_.end() || it->second != id) {
        return absl::InternalError(absl::StrCat("block ", id, ": cached but not indexed"));
      }
      if (static_cast<int32_t>(b.tokens.size()) != block_size_) {
        return absl::InternalError(
            absl::StrCat("block ", id, ": cached with ", b.tokens.size(), " token ids"));
      }
    } else if (!b.tokens.empty()) {
      return absl::InternalError(absl::StrCat("block ", id, ": uncached but keeps token ids"));
    }
  }
  if (num_cached != static_cast<int32_t>(cache_.size())) {
    return absl::InternalError(absl::StrCat("cache index has ", cache_.size(), " entries for ",
                                            num_cached, " cached blocks"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> NumBlocksForBudget(int64_t budget_bytes, int32_t block_size,
                                           int64_t num_layers, int64_t bytes_per_token) {
  if (block_size < 1)
    return absl::InvalidArgumentError(absl::StrCat("block_size must be >= 1, got ", block_size));
  if (num_layers < 1)
    return absl::InvalidArgumentError(absl::StrCat("num_layers must be >= 1, got ", num_layers));
  if (bytes_per_token < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bytes_per_token must be >= 1, got ", bytes_per_token));
  }
  const int64_t block_bytes = int64_t{block_size} * num_layers * bytes_per_token;
  const int64_t blocks = budget_bytes / block_bytes;
  if (blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache budget_bytes (", budget_bytes,
                                                   ") holds no block of ", block_bytes, " bytes"));
  }
  if (blocks > std::numeric_limits<BlockId>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache budget_bytes (", budget_bytes,
                                                   ") gives ", blocks, " blocks, more than a ",
                                                   "block id can index"));
  }
  return static_cast<int32_t>(blocks);
}

}  // namespace dsv3
