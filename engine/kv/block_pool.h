// BlockPool: the physical blocks of the paged latent-KV cache, as host bookkeeping only (the
// memory itself lives in the backend; a block id indexes it).
//
// A block holds the latent KV (kv_lora_rank + qk_rope_head_dim values per layer) of block_size
// consecutive positions of one sequence. Every block is in exactly one of three states:
//   free        ref_count 0, not cached       on the free list
//   evictable   ref_count 0, cached           on the LRU list, reusable by a prefix hit
//   used        ref_count > 0 (cached or not) held by the block tables of running sequences
// Allocate takes the free list first and evicts the least recently released cached block only
// when the free list is empty.
//
// Prefix cache: a full block whose KV has been computed can be registered under its BlockHash
// (block_hash.h) together with its token ids; a later sequence with the same prefix finds it by
// hash, confirmed by comparing token ids, and shares it by taking a reference.
//
// Not thread-safe: the scheduler owns the pool and calls it from the engine thread.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/kv/block_hash.h"

namespace dsv3 {

using BlockId = int32_t;

struct BlockPoolStats {
  int32_t num_blocks = 0;
  int32_t num_free = 0;               // on the free list
  int32_t num_evictable = 0;          // cached and unreferenced
  int32_t num_used = 0;               // referenced by at least one block table
  int32_t num_cached = 0;             // registered in the prefix cache, used or evictable
  int64_t prefix_queried_blocks = 0;  // blocks looked up by AcquirePrefix callers
  int64_t prefix_hit_blocks = 0;      // of those, found in the cache
};

// The leading cached blocks of a token sequence, found by MatchPrefix. Holds no references.
struct PrefixMatch {
  std::vector<BlockId> blocks;   // block i holds tokens [i * block_size, (i + 1) * block_size)
  int32_t num_queried = 0;       // blocks looked up (hits plus the first miss, if any)
  int32_t num_unreferenced = 0;  // of `blocks`, those now evictable (ref_count 0)
};

class BlockPool {
 public:
  // num_blocks >= 1 and block_size >= 1 (asserted; validate user input with NumBlocksForBudget
  // or before constructing).
  BlockPool(int32_t num_blocks, int32_t block_size,
            BlockHasher hasher = BlockHasher::WithRandomKey());
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  int32_t block_size() const { return block_size_; }
  const BlockHasher& hasher() const { return hasher_; }

  // Blocks that Allocate can still hand out: free plus evictable.
  int32_t NumAllocatable() const;
  // A block with ref_count 1 and no cached content, or nullopt when every block is used.
  std::optional<BlockId> Allocate();
  // Drops one reference; at zero the block becomes evictable if cached, else free.
  void Release(BlockId id);
  int32_t ref_count(BlockId id) const;

  // The longest run of leading blocks of `tokens` found in the cache: block i is looked up under
  // hashes[i] and matches only if its stored token ids equal
  // tokens[i * block_size, (i + 1) * block_size). Looks at most hashes.size() blocks; `tokens`
  // must hold at least hashes.size() full blocks. Changes nothing.
  PrefixMatch MatchPrefix(absl::Span<const BlockHash> hashes,
                          absl::Span<const int32_t> tokens) const;
  // Takes one reference on each block of `match` (found by MatchPrefix with no pool change since)
  // and counts the lookup in the stats.
  void AcquirePrefix(const PrefixMatch& match);
  // Registers the used block `id`, whose KV for `tokens` (exactly block_size ids) is computed,
  // under `hash`. Returns false, changing nothing, when another block is cached under `hash`.
  bool Cache(BlockId id, const BlockHash& hash, absl::Span<const int32_t> tokens);

  BlockPoolStats stats() const;
  // Checks that every block is in exactly one of the states above, that the lists and the cache
  // index agree with the blocks, and that the counts add up. For tests and debug checks.
  absl::Status CheckInvariants() const;

 private:
  struct Block {
    int32_t ref_count = 0;
    bool cached = false;
    BlockHash hash;               // valid when cached
    std::vector<int32_t> tokens;  // valid when cached: the block_size token ids it holds
    std::list<BlockId>::iterator lru_position;  // valid when evictable
  };

  void Uncache(BlockId id);

  int32_t block_size_;
  BlockHasher hasher_;
  std::vector<Block> blocks_;
  std::deque<BlockId> free_;  // allocated from the front, released to the back
  std::list<BlockId> lru_;    // evictable blocks, least recently released first
  absl::flat_hash_map<BlockHash, BlockId> cache_;
  int64_t prefix_queried_blocks_ = 0;
  int64_t prefix_hit_blocks_ = 0;
};

// Bytes of one token's latent KV in one layer for the BF16 cache: (kv_lora_rank +
// qk_rope_head_dim) * 2, that is 1152 for DeepSeek-V3. (The FP8 layout would be 656.)
inline int64_t Bf16LatentBytesPerToken(int64_t kv_lora_rank, int64_t qk_rope_head_dim) {
  return (kv_lora_rank + qk_rope_head_dim) * 2;
}

// How many blocks fit in `budget_bytes`: budget / (block_size * num_layers * bytes_per_token),
// where bytes_per_token is one token's KV in one layer. Fails with InvalidArgument naming the
// argument when a size is not positive or the budget holds no block, and when the count exceeds
// the range of a block id.
absl::StatusOr<int32_t> NumBlocksForBudget(int64_t budget_bytes, int32_t block_size,
                                           int64_t num_layers, int64_t bytes_per_token);

}  // namespace dsv3
