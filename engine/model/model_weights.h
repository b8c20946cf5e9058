// The weights of the DeepSeek-V3 graph as the backend keeps them, loaded by Hugging Face name
// (SPEC section 2), the MTP module (layer id num_hidden_layers) included when the checkpoint has it.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/config/model_config.h"
#include "engine/weights/checkpoint.h"
#include "engine/weights/linear_stack.h"
#include "engine/weights/parallel_reader.h"

namespace dsv3 {

// The part of the model one rank holds: items [Begin(n), End(n)) of every split dimension n,
// which must divide evenly. Under tensor parallelism every split dimension is split (heads,
// intermediate widths, routed experts, vocabulary). With data-parallel attention and expert
// parallelism (`experts_only`, --dp-attention) only the routed experts are: attention, the dense
// MLPs, the shared experts, the embedding and the head are whole on every rank, which runs them
// for its own tokens.
struct Shard {
  int rank = 0;
  int world = 1;
  bool experts_only = false;

  int64_t Begin(int64_t n) const { return n / world * rank; }
  int64_t End(int64_t n) const { return n / world * (rank + 1); }
  // The split of everything but the routed experts: this shard, or the whole under experts_only.
  Shard dense() const { return experts_only ? Shard{} : *this; }
  // InvalidArgument naming the config field that world does not divide (under experts_only,
  // n_routed_experts only).
  absl::Status Validate(const ModelConfig& config) const;
};

// Shapes below are per rank, with world = shard.dense().world for nh, I and V_local:
// nh = num_attention_heads / world, I = widths / world, E_local = n_routed_experts /
// shard.world, V_local = vocab_size / world.
struct AttentionWeights {
  // q_a [q_lora, H] (when q_lora_rank is set) and kv_a [kv_lora + rope, H], stacked in that
  // order (linear_stack.h): one GEMM of the normed hidden state.
  StackedLinear qkv_a;
  TensorView q_a_norm;               // [q_lora]
  std::optional<LinearWeight> q_b;   // [nh*(nope+rope), q_lora]
  std::optional<LinearWeight> q;     // [nh*(nope+rope), H] (q_lora_rank null)
  TensorView kv_a_norm;              // [kv_lora]
  LinearWeight kv_b;                 // [nh*(nope+v), kv_lora]
  LinearWeight o;                    // [H, nh*v]
};

// A dense layer's MLP or the shared experts: gate and up stacked (one GEMM of the same input).
struct MlpWeights {
  StackedLinear gate_up;  // parts: gate [I, H], up [I, H]
  LinearWeight down;      // [H, I]
};

struct MoeWeights {
  TensorView router;                 // [E, H] F32
  TensorView bias;                   // [E] F32 (e_score_correction_bias)
  std::vector<ExpertWeights> experts;  // this rank's experts, from shard.Begin(E)
  MlpWeights shared;                   // width moe_intermediate_size * n_shared_experts
};

struct LayerWeights {
  TensorView input_norm;             // [H]
  TensorView post_attention_norm;    // [H]
  AttentionWeights attn;
  bool is_moe = false;
  MlpWeights dense_mlp;              // dense layers
  MoeWeights moe;                    // MoE layers
};

// The MTP module (SPEC section 3): its decoder layer and the projection of [Emb(t); h] into it.
// Its embedding and head are the main model's (the checkpoint's copies are equal and not loaded).
struct MtpWeights {
  TensorView enorm;                  // [H]
  TensorView hnorm;                  // [H]
  LinearWeight eh_proj;              // [H, 2H], replicated
  LayerWeights layer;                // a MoE decoder layer
  TensorView head_norm;              // [H] shared_head.norm
};

struct ModelWeights {
  Shard shard;
  TensorView embed;                  // [V_local, H], rows from shard.dense().Begin(V)
  TensorView final_norm;             // [H]
  LinearWeight lm_head;              // [V_local, H]
  std::vector<LayerWeights> layers;
  // Loaded when config.num_nextn_predict_layers > 0 and the checkpoint has layer L's eh_proj;
  // never made by Random.
  std::optional<MtpWeights> mtp;
  std::vector<Tensor> storage;       // owns every tensor above

  // Loads this rank's shard: plans the byte ranges it needs (read_plan.h: its slices' rows, not
  // whole tensors), reads them with the parallel reader into the backend's staging memory,
  // checks their values and hands them to the backend, one request at a time, while the reader
  // works ahead. Progress goes to options.progress (and the log) per shard.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(
      const Checkpoint& ckpt, const ModelConfig& config, Backend& backend,
      const Shard& shard = {}, const WeightLoadOptions& options = {});
  // Weights of `config`'s shapes (this rank's slices of them) made by RandomTensors
  // (engine/weights/random_tensors.h) and loaded like a checkpoint's.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Random(const ModelConfig& config,
                                                             Backend& backend, uint64_t seed,
                                                             const Shard& shard = {});
};

}  // namespace dsv3
