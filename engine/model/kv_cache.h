// KvCache: the paged latent cache storage of every layer. Block b of layer l holds, for
// block_size consecutive positions of one sequence, the latent (c, k_pe): kv_lora_rank +
// qk_rope_head_dim values per token. With the MTP layer, one more layer of the same geometry holds
// the MTP module's latents: the same block ids, so a sequence's block table covers both, and the
// MTP layer's entry for position i is written when the MTP module runs at position i.
// Which block belongs to whom is the block pool's business (engine/kv); this class only owns the
// memory, and one block more that no sequence owns: scratch_block(), where the padding rows of
// graph steps write their latents (engine/model/graph_batch.h).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/config/model_config.h"

namespace dsv3 {

class KvCache {
 public:
  KvCache(Backend& backend, const ModelConfig& config, int64_t num_blocks, int32_t block_size,
          bool mtp_layer = false);

  // [num_blocks + 1, block_size, kv_lora_rank + qk_rope_head_dim] of layer `layer`
  // (num_hidden_layers: the MTP layer).
  const TensorView& layer(int64_t layer) const { return layers_[layer].view(); }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  bool has_mtp_layer() const { return has_mtp_layer_; }
  int64_t num_blocks() const { return num_blocks_; }  // the blocks sequences may own
  int32_t scratch_block() const { return static_cast<int32_t>(num_blocks_); }
  int32_t block_size() const { return block_size_; }
  // Bytes the cache holds: every layer's blocks, the scratch block included.
  int64_t bytes() const;

  // Bytes one block takes across all layers (the MTP layer's when `mtp_layer`), for sizing the
  // pool from a memory budget.
  static int64_t BytesPerBlock(const ModelConfig& config, int32_t block_size, DType dtype,
                               bool mtp_layer = false);

 private:
  std::vector<Tensor> layers_;
  bool has_mtp_layer_;
  int64_t num_blocks_;
  int32_t block_size_;
};

}  // namespace dsv3
