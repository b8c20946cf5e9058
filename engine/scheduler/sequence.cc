#include "engine/scheduler/sequence.h"

#include <utility>

namespace dsv3 {

Sequence::Sequence(SequenceId id, std::vector<int32_t> prompt_ids, int32_t max_new_tokens,
                   int64_t arrival)
    : id_(id),
      arrival_(arrival),
      max_new_tokens_(max_new_tokens),
      num_prompt_tokens_(static_cast<int32_t>(prompt_ids.size())),
      tokens_(std::move(prompt_ids)) {}

void Sequence::UpdateBlockHashes(const BlockHasher& hasher, int32_t block_size) {
  const size_t full_blocks = tokens_.size() / block_size;
  while (block_hashes_.size() < full_blocks) {
    const size_t i = block_hashes_.size();
    const BlockHash parent = i == 0 ? BlockHash{} : block_hashes_[i - 1];
    block_hashes_.push_back(hasher.Hash(parent, token_ids().subspan(i * block_size, block_size)));
  }
}

void Sequence::ResetForRecompute(BlockPool& pool) {
  block_table_.ReleaseAll(pool);
  num_computed_tokens_ = 0;
  num_cached_blocks_ = 0;
  ++num_preemptions_;
  status_ = SequenceStatus::kPreempted;
}

}  // namespace dsv3
