// ModelConfig: the fields of a Hugging Face DeepSeek-V3 config.json that the engine uses
// (SPEC.md section 1), validated so that a config the engine cannot serve is rejected early with
// a message naming the offending field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3 {

struct RopeScaling {
  std::string type;  // "yarn" or "" (none)
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> mscale;          // absent in the file: nullopt
  std::optional<double> mscale_all_dim;  // absent in the file: nullopt
  std::optional<double> attention_factor;
  bool truncate = true;  // floor/ceil the YaRN correction range (transformers' default)
};

struct QuantizationConfig {
  bool fp8 = false;  // quant_method "fp8", fmt "e4m3"
  std::string activation_scheme = "dynamic";
  int64_t block_n = 128;  // weight_block_size[0]
  int64_t block_k = 128;  // weight_block_size[1]
  bool ue8m0_scales = false;  // scale_fmt "ue8m0" (V3.1)
};

struct ModelConfig {
  std::string model_type;  // "deepseek_v3"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense layers
  int64_t moe_intermediate_size = 0;  // one routed expert
  int64_t num_hidden_layers = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  int64_t num_nextn_predict_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  std::optional<int64_t> q_lora_rank;  // nullopt: q_proj directly (V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";
  std::string topk_method = "noaux_tc";
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 0;
  RopeScaling rope_scaling;
  bool rope_interleave = true;
  std::string hidden_act = "silu";
  int64_t bos_token_id = 0;
  std::vector<int64_t> eos_token_ids;
  bool tie_word_embeddings = false;
  std::optional<QuantizationConfig> quantization;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Latent cache width per token per layer: kv_lora_rank + qk_rope_head_dim (576 for V3).
  int64_t kv_cache_dim() const { return kv_lora_rank + qk_rope_head_dim; }
  // transformers' DeepseekV3DecoderLayer: every layer from first_k_dense_replace on is MoE
  // (moe_layer_freq is parsed but, as there, not used).
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace;
  }
  // Softmax scale: qk_head_dim^-0.5 times mscale(factor, mscale_all_dim)^2 for YaRN.
  double softmax_scale() const;

  // Parses and validates config.json text; `source` names the file in error messages, which
  // also name the field ("rope_scaling.factor"). Shape-defining fields are required (q_lora_rank
  // and n_routed_experts may be null: no q LoRA, all layers dense); the others default as in
  // transformers' DeepseekV3Config (n_group 8, topk_group 4, first_k_dense_replace 3, ...), with
  // a null n_group/topk_group meaning one group. rope_parameters (transformers 5) is read in
  // place of rope_scaling when present, including its rope_theta. Sizes beyond generous limits
  // (num_hidden_layers 1024, vocab_size 2^22, ...) are refused, naming the field.
  static absl::StatusOr<ModelConfig> FromJson(const std::string& json_text,
                                              const std::string& source = "config.json");
  // Reads <model_dir>/config.json.
  static absl::StatusOr<ModelConfig> FromModelDir(const std::string& model_dir);
};

}  // namespace dsv3
