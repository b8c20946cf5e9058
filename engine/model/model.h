// DeepseekV3Model: the DeepSeek-V3 graph of SPEC section 3, written once against the Backend op
// interface. One Forward call runs one step of a flattened batch (several sequences, each with
// any number of new tokens), writes their latents into the paged KV cache and returns the logits
// of the requested rows.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/config/model_config.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model_weights.h"
#include "engine/model/rope.h"
#include "engine/weights/checkpoint.h"

namespace dsv3 {

class DeepseekV3Model {
 public:
  // Reads config.json and the safetensors of `model_dir` and loads the weights into `backend`
  // (which must outlive the model).
  static absl::StatusOr<std::unique_ptr<DeepseekV3Model>> Load(const std::string& model_dir,
                                                               Backend& backend);

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }

  // Runs the batch. Writes the latents of every new token into `cache` and the float32 logits of
  // batch.logits_rows into `logits` ([logits_rows.size(), vocab_size], resized here).
  // The batch must be valid (token ids in range, block tables covering every position): the
  // engine validates requests before they get here.
  void Forward(const ForwardBatch& batch, KvCache& cache, std::vector<float>& logits,
               MlaMode mla_mode = MlaMode::kAuto);

 private:
  DeepseekV3Model(ModelConfig config, Backend& backend) : config_(std::move(config)), backend_(backend) {}

  void Attention(const LayerWeights& layer, const TensorView& x, const AttentionBatch& batch,
                 const TensorView& cache, MlaMode mode, const TensorView& out);
  void Mlp(const ExpertWeights& w, const TensorView& x, const TensorView& out);
  void Moe(const MoeWeights& w, const TensorView& x, const TensorView& out);

  ModelConfig config_;
  Backend& backend_;
  std::unique_ptr<Checkpoint> checkpoint_;  // keeps the mmapped files for the backend's views
  std::unique_ptr<ModelWeights> weights_;
  RopeTable rope_;
};

// Builds the attention layout of a batch: positions, cache slots, per-sequence block tables.
AttentionBatch MakeAttentionBatch(const ForwardBatch& batch, int32_t block_size);

}  // namespace dsv3
