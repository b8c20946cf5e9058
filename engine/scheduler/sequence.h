// Sequence: the scheduler's view of one request: its tokens, how many of them have KV in the
// cache, and the blocks that hold it. Owned by the Scheduler, which is its only mutator; the
// engine reads it through Scheduler::Find.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/kv/block_hash.h"
#include "engine/kv/block_table.h"

namespace dsv3 {

using SequenceId = int64_t;

enum class SequenceStatus {
  kWaiting,    // not admitted yet; holds no blocks
  kRunning,    // admitted; holds the blocks of its computed tokens
  kPreempted,  // was running, gave its blocks back; waits to recompute its KV
};

class Sequence {
 public:
  // `arrival` orders sequences for scheduling policies (smaller: earlier).
  Sequence(SequenceId id, std::vector<int32_t> prompt_ids, int32_t max_new_tokens, int64_t arrival);

  SequenceId id() const { return id_; }
  int64_t arrival() const { return arrival_; }
  int32_t max_new_tokens() const { return max_new_tokens_; }
  SequenceStatus status() const { return status_; }

  // The prompt followed by the output tokens sampled so far.
  absl::Span<const int32_t> token_ids() const { return tokens_; }
  absl::Span<const int32_t> prompt_ids() const { return token_ids().first(num_prompt_tokens_); }
  absl::Span<const int32_t> output_ids() const { return token_ids().subspan(num_prompt_tokens_); }
  int32_t num_tokens() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t num_prompt_tokens() const { return num_prompt_tokens_; }
  int32_t num_output_tokens() const { return num_tokens() - num_prompt_tokens_; }

  // Tokens [0, num_computed_tokens()) have their KV in the blocks of block_table().
  int32_t num_computed_tokens() const { return num_computed_tokens_; }
  int32_t num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens_; }
  const BlockTable& block_table() const { return block_table_; }
  // Leading blocks of block_table() known to the prefix cache (hit, or registered by this
  // sequence); the scheduler registers the blocks after them as they fill up.
  int32_t num_cached_blocks() const { return num_cached_blocks_; }
  int32_t num_preemptions() const { return num_preemptions_; }

  // block_hashes()[i]: hash of the tokens of block i and all before it, for every full block of
  // token_ids() as of the last UpdateBlockHashes call.
  absl::Span<const BlockHash> block_hashes() const { return block_hashes_; }
  void UpdateBlockHashes(const BlockHasher& hasher, int32_t block_size);

  // Mutators, for the scheduler.
  void set_status(SequenceStatus status) { status_ = status; }
  void AppendToken(int32_t token) { tokens_.push_back(token); }
  void set_num_computed_tokens(int32_t n) { num_computed_tokens_ = n; }
  void set_num_cached_blocks(int32_t n) { num_cached_blocks_ = n; }
  BlockTable& mutable_block_table() { return block_table_; }
  // Returns the sequence to the state of one that was never admitted, keeping its tokens.
  void ResetForRecompute(BlockPool& pool);

 private:
  SequenceId id_;
  int64_t arrival_;
  int32_t max_new_tokens_;
  int32_t num_prompt_tokens_;
  std::vector<int32_t> tokens_;
  SequenceStatus status_ = SequenceStatus::kWaiting;
  int32_t num_computed_tokens_ = 0;
  int32_t num_cached_blocks_ = 0;
  int32_t num_preemptions_ = 0;
  BlockTable block_table_;
  std::vector<BlockHash> block_hashes_;
};

}  // namespace dsv3
