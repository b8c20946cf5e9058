#include "engine/model/model_weights.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"

namespace dsv3 {

namespace {

class Loader {
 public:
  Loader(const Checkpoint& ckpt, const ModelConfig& config, Backend& backend, ModelWeights& out)
      : ckpt_(ckpt), c_(config), backend_(backend), out_(out) {}

  absl::StatusOr<LinearWeight> Linear(const std::string& prefix, int64_t n, int64_t k) {
    return backend_.LoadLinear(ckpt_, prefix, n, k, Slice2D{}, out_.storage);
  }
  absl::StatusOr<TensorView> Dense(const std::string& name, std::initializer_list<int64_t> shape) {
    std::vector<int64_t> s(shape);
    return backend_.LoadDense(ckpt_, name, s, out_.storage);
  }

  absl::StatusOr<ExpertWeights> Mlp(const std::string& prefix, int64_t inter) {
    ExpertWeights w;
    const int64_t h = c_.hidden_size;
    DSV3_ASSIGN_OR_RETURN(w.gate, Linear(prefix + "gate_proj", inter, h));
    DSV3_ASSIGN_OR_RETURN(w.up, Linear(prefix + "up_proj", inter, h));
    DSV3_ASSIGN_OR_RETURN(w.down, Linear(prefix + "down_proj", h, inter));
    return w;
  }

  absl::Status Attention(const std::string& p, AttentionWeights& a) {
    const int64_t h = c_.hidden_size, nh = c_.num_attention_heads;
    if (c_.q_lora_rank) {
      const int64_t r = *c_.q_lora_rank;
      DSV3_ASSIGN_OR_RETURN(a.q_a, Linear(p + "q_a_proj", r, h));
      DSV3_ASSIGN_OR_RETURN(a.q_a_norm, Dense(p + "q_a_layernorm.weight", {r}));
      DSV3_ASSIGN_OR_RETURN(a.q_b, Linear(p + "q_b_proj", nh * c_.qk_head_dim(), r));
    } else {
      DSV3_ASSIGN_OR_RETURN(a.q, Linear(p + "q_proj", nh * c_.qk_head_dim(), h));
    }
    DSV3_ASSIGN_OR_RETURN(a.kv_a, Linear(p + "kv_a_proj_with_mqa", c_.kv_cache_dim(), h));
    DSV3_ASSIGN_OR_RETURN(a.kv_a_norm, Dense(p + "kv_a_layernorm.weight", {c_.kv_lora_rank}));
    DSV3_ASSIGN_OR_RETURN(
        a.kv_b, Linear(p + "kv_b_proj", nh * (c_.qk_nope_head_dim + c_.v_head_dim), c_.kv_lora_rank));
    DSV3_ASSIGN_OR_RETURN(a.o, Linear(p + "o_proj", h, nh * c_.v_head_dim));
    return absl::OkStatus();
  }

  absl::Status Layer(int64_t i, LayerWeights& l) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const int64_t h = c_.hidden_size;
    DSV3_ASSIGN_OR_RETURN(l.input_norm, Dense(p + "input_layernorm.weight", {h}));
    DSV3_ASSIGN_OR_RETURN(l.post_attention_norm, Dense(p + "post_attention_layernorm.weight", {h}));
    DSV3_RETURN_IF_ERROR(Attention(p + "self_attn.", l.attn));
    l.is_moe = c_.is_moe_layer(i);
    if (!l.is_moe) {
      DSV3_ASSIGN_OR_RETURN(l.dense_mlp, Mlp(p + "mlp.", c_.intermediate_size));
      return absl::OkStatus();
    }
    const int64_t e = c_.n_routed_experts;
    DSV3_ASSIGN_OR_RETURN(l.moe.router, Dense(p + "mlp.gate.weight", {e, h}));
    DSV3_ASSIGN_OR_RETURN(l.moe.bias, Dense(p + "mlp.gate.e_score_correction_bias", {e}));
    l.moe.experts.resize(e);
    for (int64_t j = 0; j < e; ++j) {
      DSV3_ASSIGN_OR_RETURN(l.moe.experts[j],
                            Mlp(absl::StrCat(p, "mlp.experts.", j, "."), c_.moe_intermediate_size));
    }
    DSV3_ASSIGN_OR_RETURN(l.moe.shared, Mlp(p + "mlp.shared_experts.",
                                            c_.moe_intermediate_size * c_.n_shared_experts));
    return absl::OkStatus();
  }

 private:
  const Checkpoint& ckpt_;
  const ModelConfig& c_;
  Backend& backend_;
  ModelWeights& out_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const Checkpoint& ckpt,
                                                                const ModelConfig& config,
                                                                Backend& backend) {
  auto w = std::make_unique<ModelWeights>();
  Loader loader(ckpt, config, backend, *w);
  const int64_t v = config.vocab_size, h = config.hidden_size;
  DSV3_ASSIGN_OR_RETURN(w->embed, loader.Dense("model.embed_tokens.weight", {v, h}));
  DSV3_ASSIGN_OR_RETURN(w->final_norm, loader.Dense("model.norm.weight", {h}));
  DSV3_ASSIGN_OR_RETURN(w->lm_head, loader.Linear("lm_head", v, h));
  w->layers.resize(config.num_hidden_layers);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    DSV3_RETURN_IF_ERROR(loader.Layer(i, w->layers[i]));
  }
  return w;
}

}  // namespace dsv3
