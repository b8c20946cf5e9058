#include "engine/config/model_config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace dsv3 {

namespace {

using Json = nlohmann::json;

#define DSV3_CONFIG_RETURN_IF_ERROR(expr) \
  do {                                    \
    absl::Status status_ = (expr);        \
    if (!status_.ok()) return status_;    \
  } while (0)

// Reads typed fields out of one JSON object. Every error names the source file and the field
// (dotted path for nested objects, e.g. "rope_scaling.factor"); nothing here throws.
class FieldReader {
 public:
  FieldReader(const Json& obj, const std::string& source, std::string prefix = "")
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  // Present and non-null.
  bool Has(std::string_view key) const {
    auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }
  bool Contains(std::string_view key) const { return obj_.find(key) != obj_.end(); }
  const Json& At(std::string_view key) const { return *obj_.find(key); }

  std::string Name(std::string_view key) const { return prefix_ + std::string(key); }

  absl::Status Error(std::string_view key, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": field '", Name(key), "' ", std::string(what)));
  }
  absl::Status Missing(std::string_view key) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": missing required field '", Name(key), "'"));
  }

  // Absent or null: `required` decides between an error and keeping *out.
  absl::Status Int(std::string_view key, int64_t* out, bool required = false) const {
    if (!Has(key)) return required ? Missing(key) : absl::OkStatus();
    return ToInt(key, At(key), out);
  }
  absl::Status Double(std::string_view key, double* out, bool required = false) const {
    if (!Has(key)) return required ? Missing(key) : absl::OkStatus();
    const Json& v = At(key);
    if (!v.is_number()) return Error(key, absl::StrCat("must be a number, got ", Describe(v)));
    *out = v.get<double>();
    if (!std::isfinite(*out)) return Error(key, "must be finite");
    return absl::OkStatus();
  }
  absl::Status OptDouble(std::string_view key, std::optional<double>* out) const {
    if (!Has(key)) return absl::OkStatus();
    double d = 0;
    DSV3_CONFIG_RETURN_IF_ERROR(Double(key, &d));
    *out = d;
    return absl::OkStatus();
  }
  absl::Status Bool(std::string_view key, bool* out) const {
    if (!Has(key)) return absl::OkStatus();
    const Json& v = At(key);
    if (!v.is_boolean()) return Error(key, absl::StrCat("must be a boolean, got ", Describe(v)));
    *out = v.get<bool>();
    return absl::OkStatus();
  }
  absl::Status String(std::string_view key, std::string* out, bool required = false) const {
    if (!Has(key)) return required ? Missing(key) : absl::OkStatus();
    const Json& v = At(key);
    if (!v.is_string()) return Error(key, absl::StrCat("must be a string, got ", Describe(v)));
    *out = v.get<std::string>();
    return absl::OkStatus();
  }
  // The value must be one of `supported`.
  absl::Status OneOf(std::string_view key, const std::string& value,
                     std::initializer_list<const char*> supported) const {
    for (const char* s : supported) {
      if (value == s) return absl::OkStatus();
    }
    return Error(key,
                 absl::StrCat("is '", value, "'; supported: ", absl::StrJoin(supported, ", ")));
  }
  absl::Status Positive(std::string_view key, int64_t v) const {
    return v > 0 ? absl::OkStatus() : Error(key, absl::StrCat("is ", v, "; must be positive"));
  }
  absl::Status NonNegative(std::string_view key, int64_t v) const {
    return v >= 0 ? absl::OkStatus() : Error(key, absl::StrCat("is ", v, "; must be >= 0"));
  }

  // An integer, or a float with an integral value (some writers emit 7168.0).
  absl::Status ToInt(std::string_view key, const Json& v, int64_t* out) const {
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(key, "is out of range");
      }
      *out = static_cast<int64_t>(u);
      return absl::OkStatus();
    }
    if (v.is_number_integer()) {
      *out = v.get<int64_t>();
      return absl::OkStatus();
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
        *out = static_cast<int64_t>(d);
        return absl::OkStatus();
      }
    }
    return Error(key, absl::StrCat("must be an integer, got ", Describe(v)));
  }

  static std::string Describe(const Json& v) {
    std::string text = v.dump();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return absl::StrCat(v.type_name(), " ", text);
  }

 private:
  const Json& obj_;
  const std::string& source_;
  std::string prefix_;
};

// rope_scaling (transformers 4) or rope_parameters (transformers 5, which may also carry
// rope_theta). The type key is "type" or "rope_type"; "default" means no scaling.
absl::Status ParseRope(const FieldReader& top, const std::string& source, ModelConfig& c) {
  const char* key = top.Has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (!top.Has(key)) return absl::OkStatus();
  const Json& obj = top.At(key);
  if (!obj.is_object()) {
    return top.Error(key,
                     absl::StrCat("must be an object or null, got ", FieldReader::Describe(obj)));
  }
  FieldReader r(obj, source, absl::StrCat(key, "."));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Double("rope_theta", &c.rope_theta));
  const char* type_key = r.Has("rope_type") ? "rope_type" : "type";
  std::string type;
  DSV3_CONFIG_RETURN_IF_ERROR(r.String(type_key, &type));
  if (type.empty() || type == "default" || type == "none") {
    c.rope_scaling = RopeScaling{};
    return absl::OkStatus();
  }
  DSV3_CONFIG_RETURN_IF_ERROR(r.OneOf(type_key, type, {"yarn", "default"}));
  RopeScaling& y = c.rope_scaling;
  y.type = "yarn";
  DSV3_CONFIG_RETURN_IF_ERROR(r.Double("factor", &y.factor, /*required=*/true));
  if (!(y.factor > 0)) return r.Error("factor", absl::StrCat("is ", y.factor, "; must be > 0"));
  // transformers falls back to max_position_embeddings when this is absent.
  y.original_max_position_embeddings = c.max_position_embeddings;
  DSV3_CONFIG_RETURN_IF_ERROR(
      r.Int("original_max_position_embeddings", &y.original_max_position_embeddings));
  DSV3_CONFIG_RETURN_IF_ERROR(
      r.Positive("original_max_position_embeddings", y.original_max_position_embeddings));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Double("beta_fast", &y.beta_fast));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Double("beta_slow", &y.beta_slow));
  DSV3_CONFIG_RETURN_IF_ERROR(r.OptDouble("mscale", &y.mscale));
  DSV3_CONFIG_RETURN_IF_ERROR(r.OptDouble("mscale_all_dim", &y.mscale_all_dim));
  DSV3_CONFIG_RETURN_IF_ERROR(r.OptDouble("attention_factor", &y.attention_factor));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Bool("truncate", &y.truncate));
  return absl::OkStatus();
}

absl::Status ParseQuantization(const FieldReader& top, const std::string& source, ModelConfig& c) {
  if (!top.Has("quantization_config")) return absl::OkStatus();
  const Json& obj = top.At("quantization_config");
  if (!obj.is_object()) {
    return top.Error("quantization_config",
                     absl::StrCat("must be an object or null, got ", FieldReader::Describe(obj)));
  }
  FieldReader r(obj, source, "quantization_config.");
  QuantizationConfig q;
  std::string method, fmt = "e4m3", scale_fmt;
  DSV3_CONFIG_RETURN_IF_ERROR(r.String("quant_method", &method, /*required=*/true));
  DSV3_CONFIG_RETURN_IF_ERROR(r.OneOf("quant_method", method, {"fp8"}));
  DSV3_CONFIG_RETURN_IF_ERROR(r.String("fmt", &fmt));
  DSV3_CONFIG_RETURN_IF_ERROR(r.OneOf("fmt", fmt, {"e4m3"}));
  q.fp8 = true;
  DSV3_CONFIG_RETURN_IF_ERROR(r.String("activation_scheme", &q.activation_scheme));
  DSV3_CONFIG_RETURN_IF_ERROR(r.OneOf("activation_scheme", q.activation_scheme, {"dynamic"}));
  DSV3_CONFIG_RETURN_IF_ERROR(r.String("scale_fmt", &scale_fmt));
  if (!scale_fmt.empty()) {
    DSV3_CONFIG_RETURN_IF_ERROR(r.OneOf("scale_fmt", scale_fmt, {"ue8m0"}));
    q.ue8m0_scales = true;
  }
  if (r.Has("weight_block_size")) {
    const Json& b = r.At("weight_block_size");
    if (!b.is_array() || b.size() != 2) {
      return r.Error("weight_block_size",
                     absl::StrCat("must be two positive integers, got ", FieldReader::Describe(b)));
    }
    DSV3_CONFIG_RETURN_IF_ERROR(r.ToInt("weight_block_size", b[0], &q.block_n));
    DSV3_CONFIG_RETURN_IF_ERROR(r.ToInt("weight_block_size", b[1], &q.block_k));
    if (q.block_n <= 0 || q.block_k <= 0) {
      return r.Error("weight_block_size",
                     absl::StrCat("is ", b.dump(), "; must be two positive integers"));
    }
  }
  c.quantization = q;
  return absl::OkStatus();
}

// eos_token_id: an integer or a list of integers.
absl::Status ParseEos(const FieldReader& r, ModelConfig& c) {
  c.eos_token_ids = {1};  // transformers' default
  if (!r.Has("eos_token_id")) return absl::OkStatus();
  const Json& v = r.At("eos_token_id");
  c.eos_token_ids.clear();
  if (v.is_array()) {
    if (v.empty()) return r.Error("eos_token_id", "is an empty list");
    for (const Json& e : v) {
      int64_t id = 0;
      DSV3_CONFIG_RETURN_IF_ERROR(r.ToInt("eos_token_id", e, &id));
      c.eos_token_ids.push_back(id);
    }
  } else {
    int64_t id = 0;
    DSV3_CONFIG_RETURN_IF_ERROR(r.ToInt("eos_token_id", v, &id));
    c.eos_token_ids.push_back(id);
  }
  return absl::OkStatus();
}

// Upper bounds on the sizes that the engine allocates by, far above any released model
// (DeepSeek-V3: vocabulary 129280, hidden 7168, 61 layers, 128 heads, 256 experts, 163840
// positions), so that a typo or a hostile config.json fails here, naming the field, rather
// than in an allocation sized by it (std::bad_alloc).
struct SizeLimit {
  const char* field;
  int64_t ModelConfig::*value;
  int64_t max;
};
constexpr int64_t kMaxLoraRank = int64_t{1} << 14;
constexpr SizeLimit kSizeLimits[] = {
    {"vocab_size", &ModelConfig::vocab_size, int64_t{1} << 22},
    {"hidden_size", &ModelConfig::hidden_size, int64_t{1} << 16},
    {"intermediate_size", &ModelConfig::intermediate_size, int64_t{1} << 20},
    {"num_hidden_layers", &ModelConfig::num_hidden_layers, 1024},
    {"num_attention_heads", &ModelConfig::num_attention_heads, 1024},
    {"num_key_value_heads", &ModelConfig::num_key_value_heads, 1024},
    {"kv_lora_rank", &ModelConfig::kv_lora_rank, kMaxLoraRank},
    {"qk_nope_head_dim", &ModelConfig::qk_nope_head_dim, int64_t{1} << 12},
    {"qk_rope_head_dim", &ModelConfig::qk_rope_head_dim, int64_t{1} << 12},
    {"v_head_dim", &ModelConfig::v_head_dim, int64_t{1} << 12},
    {"n_routed_experts", &ModelConfig::n_routed_experts, int64_t{1} << 14},
    {"n_shared_experts", &ModelConfig::n_shared_experts, 64},
    {"moe_intermediate_size", &ModelConfig::moe_intermediate_size, int64_t{1} << 20},
    {"num_nextn_predict_layers", &ModelConfig::num_nextn_predict_layers, 64},
    {"max_position_embeddings", &ModelConfig::max_position_embeddings, int64_t{1} << 24},
};

absl::Status CheckSizeLimits(const FieldReader& r, const ModelConfig& c) {
  for (const SizeLimit& limit : kSizeLimits) {
    if (c.*limit.value > limit.max) {
      return r.Error(limit.field, absl::StrCat("is ", c.*limit.value, "; at most ", limit.max,
                                               " is supported"));
    }
  }
  if (c.q_lora_rank.value_or(0) > kMaxLoraRank) {
    return r.Error("q_lora_rank", absl::StrCat("is ", *c.q_lora_rank, "; at most ", kMaxLoraRank,
                                               " is supported"));
  }
  return absl::OkStatus();
}

// Fields that fix tensor shapes are required; the rest default as in transformers'
// DeepseekV3Config. n_routed_experts null means an all-dense model; n_group/topk_group null
// means no group limit (1 group).
absl::Status ParseFields(const FieldReader& r, const std::string& source, ModelConfig& c) {
  DSV3_CONFIG_RETURN_IF_ERROR(r.String("model_type", &c.model_type, /*required=*/true));
  DSV3_CONFIG_RETURN_IF_ERROR(
      r.OneOf("model_type", c.model_type, {"deepseek_v3", "deepseek_v2", "kimi_k2"}));
  for (auto [key, field] : std::initializer_list<std::pair<const char*, int64_t*>>{
           {"vocab_size", &c.vocab_size},
           {"hidden_size", &c.hidden_size},
           {"intermediate_size", &c.intermediate_size},
           {"num_hidden_layers", &c.num_hidden_layers},
           {"num_attention_heads", &c.num_attention_heads},
           {"kv_lora_rank", &c.kv_lora_rank},
           {"qk_nope_head_dim", &c.qk_nope_head_dim},
           {"qk_rope_head_dim", &c.qk_rope_head_dim},
           {"v_head_dim", &c.v_head_dim}}) {
    DSV3_CONFIG_RETURN_IF_ERROR(r.Int(key, field, /*required=*/true));
    DSV3_CONFIG_RETURN_IF_ERROR(r.Positive(key, *field));
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    return r.Error("qk_rope_head_dim",
                   absl::StrCat("is ", c.qk_rope_head_dim, "; must be even (RoPE pairs)"));
  }

  if (!r.Contains("q_lora_rank")) return r.Missing("q_lora_rank");
  if (r.Has("q_lora_rank")) {
    int64_t q = 0;
    DSV3_CONFIG_RETURN_IF_ERROR(r.Int("q_lora_rank", &q));
    DSV3_CONFIG_RETURN_IF_ERROR(r.Positive("q_lora_rank", q));
    c.q_lora_rank = q;
  }

  c.num_key_value_heads = c.num_attention_heads;
  DSV3_CONFIG_RETURN_IF_ERROR(r.Int("num_key_value_heads", &c.num_key_value_heads));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Positive("num_key_value_heads", c.num_key_value_heads));

  // Mixture of experts.
  if (!r.Contains("n_routed_experts")) return r.Missing("n_routed_experts");
  DSV3_CONFIG_RETURN_IF_ERROR(r.Int("n_routed_experts", &c.n_routed_experts));
  DSV3_CONFIG_RETURN_IF_ERROR(r.NonNegative("n_routed_experts", c.n_routed_experts));
  c.first_k_dense_replace = 3;
  c.n_shared_experts = 1;
  c.n_group = 8;
  c.topk_group = 4;
  c.routed_scaling_factor = 2.5;
  DSV3_CONFIG_RETURN_IF_ERROR(r.Int("first_k_dense_replace", &c.first_k_dense_replace));
  DSV3_CONFIG_RETURN_IF_ERROR(r.NonNegative("first_k_dense_replace", c.first_k_dense_replace));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Int("moe_layer_freq", &c.moe_layer_freq));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Positive("moe_layer_freq", c.moe_layer_freq));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Double("routed_scaling_factor", &c.routed_scaling_factor));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Bool("norm_topk_prob", &c.norm_topk_prob));
  DSV3_CONFIG_RETURN_IF_ERROR(r.String("scoring_func", &c.scoring_func));
  DSV3_CONFIG_RETURN_IF_ERROR(r.OneOf("scoring_func", c.scoring_func, {"sigmoid", "softmax"}));
  DSV3_CONFIG_RETURN_IF_ERROR(r.String("topk_method", &c.topk_method));
  DSV3_CONFIG_RETURN_IF_ERROR(
      r.OneOf("topk_method", c.topk_method, {"noaux_tc", "greedy", "group_limited_greedy"}));
  for (auto [key, field] : std::initializer_list<std::pair<const char*, int64_t*>>{
           {"n_group", &c.n_group}, {"topk_group", &c.topk_group}}) {
    if (r.Contains(key) && !r.Has(key)) *field = 1;
    DSV3_CONFIG_RETURN_IF_ERROR(r.Int(key, field));
    DSV3_CONFIG_RETURN_IF_ERROR(r.Positive(key, *field));
  }
  if (r.Contains("n_shared_experts") && !r.Has("n_shared_experts")) c.n_shared_experts = 0;
  DSV3_CONFIG_RETURN_IF_ERROR(r.Int("n_shared_experts", &c.n_shared_experts));
  DSV3_CONFIG_RETURN_IF_ERROR(r.NonNegative("n_shared_experts", c.n_shared_experts));
  if (c.n_routed_experts > 0) {
    DSV3_CONFIG_RETURN_IF_ERROR(
        r.Int("moe_intermediate_size", &c.moe_intermediate_size, /*required=*/true));
    DSV3_CONFIG_RETURN_IF_ERROR(r.Positive("moe_intermediate_size", c.moe_intermediate_size));
    DSV3_CONFIG_RETURN_IF_ERROR(
        r.Int("num_experts_per_tok", &c.num_experts_per_tok, /*required=*/true));
    DSV3_CONFIG_RETURN_IF_ERROR(r.Positive("num_experts_per_tok", c.num_experts_per_tok));
    if (c.n_routed_experts % c.n_group != 0) {
      return r.Error("n_group", absl::StrCat("is ", c.n_group, "; must divide n_routed_experts (",
                                             c.n_routed_experts, ")"));
    }
    if (c.topk_group > c.n_group) {
      return r.Error("topk_group",
                     absl::StrCat("is ", c.topk_group, "; must be <= n_group (", c.n_group, ")"));
    }
    const int64_t reachable = c.topk_group * (c.n_routed_experts / c.n_group);
    if (c.num_experts_per_tok > c.n_routed_experts || c.num_experts_per_tok > reachable) {
      return r.Error("num_experts_per_tok",
                     absl::StrCat("is ", c.num_experts_per_tok, "; must be <= n_routed_experts (",
                                  c.n_routed_experts, ") and <= topk_group * experts per group (",
                                  reachable, ")"));
    }
  }
  DSV3_CONFIG_RETURN_IF_ERROR(r.Int("num_nextn_predict_layers", &c.num_nextn_predict_layers));
  DSV3_CONFIG_RETURN_IF_ERROR(
      r.NonNegative("num_nextn_predict_layers", c.num_nextn_predict_layers));

  // Norms, activation, positions.
  DSV3_CONFIG_RETURN_IF_ERROR(r.Double("rms_norm_eps", &c.rms_norm_eps));
  if (!(c.rms_norm_eps > 0)) return r.Error("rms_norm_eps", "must be > 0");
  DSV3_CONFIG_RETURN_IF_ERROR(r.String("hidden_act", &c.hidden_act));
  DSV3_CONFIG_RETURN_IF_ERROR(r.OneOf("hidden_act", c.hidden_act, {"silu"}));
  bool attention_bias = false;
  DSV3_CONFIG_RETURN_IF_ERROR(r.Bool("attention_bias", &attention_bias));
  if (attention_bias) return r.Error("attention_bias", "is true; only false is supported");
  c.max_position_embeddings = 4096;
  DSV3_CONFIG_RETURN_IF_ERROR(r.Int("max_position_embeddings", &c.max_position_embeddings));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Positive("max_position_embeddings", c.max_position_embeddings));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Double("rope_theta", &c.rope_theta));
  DSV3_CONFIG_RETURN_IF_ERROR(r.Bool("rope_interleave", &c.rope_interleave));
  DSV3_CONFIG_RETURN_IF_ERROR(ParseRope(r, source, c));
  if (!(c.rope_theta > 0)) return r.Error("rope_theta", "must be > 0");

  // Tokens.
  DSV3_CONFIG_RETURN_IF_ERROR(r.Int("bos_token_id", &c.bos_token_id));
  DSV3_CONFIG_RETURN_IF_ERROR(ParseEos(r, c));
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size) {
    return r.Error("bos_token_id",
                   absl::StrCat("is ", c.bos_token_id, "; must be in [0, ", c.vocab_size, ")"));
  }
  for (int64_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return r.Error("eos_token_id",
                     absl::StrCat("has ", id, "; must be in [0, ", c.vocab_size, ")"));
    }
  }
  DSV3_CONFIG_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  DSV3_CONFIG_RETURN_IF_ERROR(CheckSizeLimits(r, c));
  return ParseQuantization(r, source, c);
}

}  // namespace

double ModelConfig::softmax_scale() const {
  // transformers' DeepseekV3Attention: mscale only when mscale_all_dim is set and non-zero.
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling.type == "yarn" && rope_scaling.factor > 1.0 &&
      rope_scaling.mscale_all_dim.value_or(0.0) != 0.0) {
    const double m = 0.1 * *rope_scaling.mscale_all_dim * std::log(rope_scaling.factor) + 1.0;
    scale *= m * m;
  }
  return scale;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& json_text,
                                                  const std::string& source) {
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": invalid JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": top level must be a JSON object, got ", root.type_name()));
  }
  ModelConfig c;
  DSV3_CONFIG_RETURN_IF_ERROR(ParseFields(FieldReader(root, source), source, c));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromModelDir(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return FromJson(text.str(), path);
}

}  // namespace dsv3
