// The weights of the DeepSeek-V3 graph as the backend keeps them, loaded by Hugging Face name
// (SPEC section 2). The MTP layer (id num_hidden_layers) is not loaded here; its tensors may be
// in the checkpoint and are left alone.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/config/model_config.h"
#include "engine/weights/checkpoint.h"

namespace dsv3 {

struct AttentionWeights {
  std::optional<LinearWeight> q_a;   // [q_lora, H]        (q_lora_rank set)
  TensorView q_a_norm;               // [q_lora]
  std::optional<LinearWeight> q_b;   // [nh*(nope+rope), q_lora]
  std::optional<LinearWeight> q;     // [nh*(nope+rope), H] (q_lora_rank null)
  LinearWeight kv_a;                 // [kv_lora + rope, H]
  TensorView kv_a_norm;              // [kv_lora]
  LinearWeight kv_b;                 // [nh*(nope+v), kv_lora]
  LinearWeight o;                    // [H, nh*v]
};

struct MoeWeights {
  TensorView router;                 // [E, H] F32
  TensorView bias;                   // [E] F32 (e_score_correction_bias)
  std::vector<ExpertWeights> experts;
  ExpertWeights shared;              // width moe_intermediate_size * n_shared_experts
};

struct LayerWeights {
  TensorView input_norm;             // [H]
  TensorView post_attention_norm;    // [H]
  AttentionWeights attn;
  bool is_moe = false;
  ExpertWeights dense_mlp;           // dense layers
  MoeWeights moe;                    // MoE layers
};

struct ModelWeights {
  TensorView embed;                  // [V, H]
  TensorView final_norm;             // [H]
  LinearWeight lm_head;              // [V, H]
  std::vector<LayerWeights> layers;
  std::vector<Tensor> storage;       // owns every tensor above

  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(const Checkpoint& ckpt,
                                                           const ModelConfig& config,
                                                           Backend& backend);
};

}  // namespace dsv3
