#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "engine/config/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace dsv3::config_model_config_test {
namespace {

using ::dsv3::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// deepseek-ai/DeepSeek-V3 config.json as published (auto_map omitted).
constexpr char kDeepSeekV3Config[] = R"({
  "architectures": ["DeepseekV3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "aux_loss_alpha": 0.001,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "ep_size": 1,
  "first_k_dense_replace": 3,
  "hidden_act": "silu",
  "hidden_size": 7168,
  "initializer_range": 0.02,
  "intermediate_size": 18432,
  "kv_lora_rank": 512,
  "max_position_embeddings": 163840,
  "model_type": "deepseek_v3",
  "moe_intermediate_size": 2048,
  "moe_layer_freq": 1,
  "n_group": 8,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "norm_topk_prob": true,
  "num_attention_heads": 128,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 61,
  "num_key_value_heads": 128,
  "num_nextn_predict_layers": 1,
  "q_lora_rank": 1536,
  "qk_nope_head_dim": 128,
  "qk_rope_head_dim": 64,
  "quantization_config": {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128]
  },
  "rms_norm_eps": 1e-06,
  "rope_scaling": {
    "beta_fast": 32,
    "beta_slow": 1,
    "factor": 40,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "original_max_position_embeddings": 4096,
    "type": "yarn"
  },
  "rope_theta": 10000,
  "routed_scaling_factor": 2.5,
  "scoring_func": "sigmoid",
  "seq_aux": true,
  "tie_word_embeddings": false,
  "topk_group": 4,
  "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16",
  "transformers_version": "4.33.1",
  "use_cache": true,
  "v_head_dim": 128,
  "vocab_size": 129280
})";

Json V3() { return Json::parse(kDeepSeekV3Config); }

absl::StatusOr<ModelConfig> Parse(const Json& j) { return ModelConfig::FromJson(j.dump()); }

TEST(ModelConfigTest, DeepSeekV3) {
  auto c = ModelConfig::FromJson(kDeepSeekV3Config);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "deepseek_v3");
  EXPECT_EQ(c->vocab_size, 129280);
  EXPECT_EQ(c->hidden_size, 7168);
  EXPECT_EQ(c->intermediate_size, 18432);
  EXPECT_EQ(c->moe_intermediate_size, 2048);
  EXPECT_EQ(c->num_hidden_layers, 61);
  EXPECT_EQ(c->first_k_dense_replace, 3);
  EXPECT_EQ(c->moe_layer_freq, 1);
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  EXPECT_EQ(c->num_attention_heads, 128);
  EXPECT_EQ(c->num_key_value_heads, 128);
  EXPECT_EQ(c->q_lora_rank, 1536);
  EXPECT_EQ(c->kv_lora_rank, 512);
  EXPECT_EQ(c->qk_nope_head_dim, 128);
  EXPECT_EQ(c->qk_rope_head_dim, 64);
  EXPECT_EQ(c->v_head_dim, 128);
  EXPECT_EQ(c->n_routed_experts, 256);
  EXPECT_EQ(c->n_shared_experts, 1);
  EXPECT_EQ(c->num_experts_per_tok, 8);
  EXPECT_EQ(c->n_group, 8);
  EXPECT_EQ(c->topk_group, 4);
  EXPECT_DOUBLE_EQ(c->routed_scaling_factor, 2.5);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->scoring_func, "sigmoid");
  EXPECT_EQ(c->topk_method, "noaux_tc");
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->max_position_embeddings, 163840);
  EXPECT_EQ(c->rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 40.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c->rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.beta_slow, 1.0);
  EXPECT_EQ(c->rope_scaling.mscale, 1.0);
  EXPECT_EQ(c->rope_scaling.mscale_all_dim, 1.0);
  EXPECT_EQ(c->rope_scaling.attention_factor, std::nullopt);
  EXPECT_TRUE(c->rope_scaling.truncate);
  EXPECT_TRUE(c->rope_interleave);
  EXPECT_EQ(c->hidden_act, "silu");
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(1));
  EXPECT_FALSE(c->tie_word_embeddings);
  ASSERT_TRUE(c->quantization.has_value());
  EXPECT_TRUE(c->quantization->fp8);
  EXPECT_EQ(c->quantization->activation_scheme, "dynamic");
  EXPECT_EQ(c->quantization->block_n, 128);
  EXPECT_EQ(c->quantization->block_k, 128);
  EXPECT_FALSE(c->quantization->ue8m0_scales);

  EXPECT_EQ(c->qk_head_dim(), 192);
  EXPECT_EQ(c->kv_cache_dim(), 576);
  EXPECT_FALSE(c->is_moe_layer(2));
  EXPECT_TRUE(c->is_moe_layer(3));
  // 192^-0.5 * (0.1 * ln 40 + 1)^2
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_DOUBLE_EQ(c->softmax_scale(), m * m / std::sqrt(192.0));
  EXPECT_NEAR(c->softmax_scale(), 0.1352337, 1e-6);
}

// DeepSeek-V2-Lite's shape of config: no q LoRA, softmax greedy routing, no FP8, mscale 0.707.
TEST(ModelConfigTest, V2LiteStyle) {
  Json j = V3();
  j["model_type"] = "deepseek_v2";
  j["q_lora_rank"] = nullptr;
  j["scoring_func"] = "softmax";
  j["topk_method"] = "greedy";
  j["n_group"] = 1;
  j["topk_group"] = 1;
  j["n_routed_experts"] = 64;
  j["num_experts_per_tok"] = 6;
  j["n_shared_experts"] = 2;
  j["norm_topk_prob"] = false;
  j["rope_scaling"]["mscale"] = 0.707;
  j["rope_scaling"]["mscale_all_dim"] = 0.707;
  j["eos_token_id"] = Json::array({1, 2});
  j.erase("quantization_config");
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_lora_rank, std::nullopt);
  EXPECT_EQ(c->scoring_func, "softmax");
  EXPECT_EQ(c->topk_method, "greedy");
  EXPECT_FALSE(c->norm_topk_prob);
  EXPECT_FALSE(c->quantization.has_value());
  EXPECT_THAT(c->eos_token_ids, ElementsAre(1, 2));
  const double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_DOUBLE_EQ(c->softmax_scale(), m * m / std::sqrt(192.0));
}

TEST(ModelConfigTest, SoftmaxScaleFollowsTransformers) {
  struct Row {
    const char* what;
    Json rope_scaling;
    double multiplier;  // of 192^-0.5
  };
  const double m40 = 0.1 * std::log(40.0) + 1.0;
  const std::vector<Row> rows = {
      {"no scaling", nullptr, 1.0},
      {"yarn without mscale_all_dim", {{"type", "yarn"}, {"factor", 40}, {"mscale", 1.0}}, 1.0},
      {"yarn with mscale_all_dim 0",
       {{"type", "yarn"}, {"factor", 40}, {"mscale_all_dim", 0}},
       1.0},
      {"yarn factor 1", {{"type", "yarn"}, {"factor", 1}, {"mscale_all_dim", 1.0}}, 1.0},
      {"yarn via rope_type",
       {{"rope_type", "yarn"}, {"factor", 40}, {"mscale_all_dim", 1.0}},
       m40 * m40},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.what);
    Json j = V3();
    j["rope_scaling"] = row.rope_scaling;
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_DOUBLE_EQ(c->softmax_scale(), row.multiplier / std::sqrt(192.0));
  }
}

TEST(ModelConfigTest, Transformers5RopeParameters) {
  Json j = V3();
  Json rope = j["rope_scaling"];
  rope.erase("type");
  rope["rope_type"] = "yarn";
  rope["rope_theta"] = 50000;
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = rope;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 40.0);
  EXPECT_DOUBLE_EQ(c->rope_theta, 50000.0);

  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 20000}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, "");
  EXPECT_DOUBLE_EQ(c->rope_theta, 20000.0);
  EXPECT_DOUBLE_EQ(c->softmax_scale(), 1.0 / std::sqrt(192.0));
}

TEST(ModelConfigTest, DefaultsForOptionalFields) {
  Json j = V3();
  for (const char* key : {"num_key_value_heads", "rope_interleave", "hidden_act", "bos_token_id",
                          "eos_token_id", "tie_word_embeddings", "moe_layer_freq",
                          "num_nextn_predict_layers", "n_group", "topk_group", "rope_theta",
                          "scoring_func", "topk_method", "rms_norm_eps", "first_k_dense_replace"}) {
    j.erase(key);
  }
  j["num_attention_heads"] = 64;
  j["rope_scaling"].erase("original_max_position_embeddings");
  j["quantization_config"].erase("weight_block_size");
  j["quantization_config"].erase("fmt");
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 64);
  EXPECT_TRUE(c->rope_interleave);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(1));
  EXPECT_EQ(c->n_group, 8);  // transformers' DeepseekV3Config defaults
  EXPECT_EQ(c->topk_group, 4);
  EXPECT_EQ(c->first_k_dense_replace, 3);
  EXPECT_EQ(c->num_nextn_predict_layers, 0);
  EXPECT_EQ(c->scoring_func, "sigmoid");
  EXPECT_EQ(c->topk_method, "noaux_tc");
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 163840);
  EXPECT_EQ(c->quantization->block_n, 128);
}

TEST(ModelConfigTest, KimiK2AndV31Variants) {
  Json j = V3();
  j["model_type"] = "kimi_k2";
  j["n_routed_experts"] = 384;
  j["n_group"] = 1;
  j["topk_group"] = 1;
  j["num_attention_heads"] = 64;
  j["eos_token_id"] = 163586;
  j["vocab_size"] = 163840;
  j["hidden_size"] = 7168.0;  // integral floats are accepted
  j["quantization_config"]["scale_fmt"] = "ue8m0";
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_routed_experts, 384);
  EXPECT_EQ(c->hidden_size, 7168);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(163586));
  EXPECT_TRUE(c->quantization->ue8m0_scales);
}

// Each row changes one field of the V3 config (a null `value` with erase=true removes it); the
// error must name the file and the field.
TEST(ModelConfigTest, RejectsWhatTheEngineCannotServe) {
  struct Row {
    std::string pointer;  // JSON pointer to the field
    Json value;
    bool erase;
    std::string expected;
  };
  const std::vector<Row> rows = {
      {"/model_type", "llama", false,
       "field 'model_type' is 'llama'; supported: deepseek_v3, deepseek_v2, kimi_k2"},
      {"/model_type", nullptr, true, "missing required field 'model_type'"},
      {"/vocab_size", nullptr, true, "missing required field 'vocab_size'"},
      {"/vocab_size", 0, false, "field 'vocab_size' is 0; must be positive"},
      {"/hidden_size", "7168", false, "field 'hidden_size' must be an integer, got string"},
      {"/hidden_size", 7168.5, false, "field 'hidden_size' must be an integer"},
      {"/hidden_size", 18446744073709551615ull, false, "field 'hidden_size' is out of range"},
      {"/num_hidden_layers", -1, false, "field 'num_hidden_layers' is -1"},
      {"/num_attention_heads", Json::array({128}), false,
       "field 'num_attention_heads' must be an integer, got array"},
      {"/kv_lora_rank", nullptr, false, "missing required field 'kv_lora_rank'"},
      {"/v_head_dim", 0, false, "field 'v_head_dim'"},
      {"/qk_rope_head_dim", 63, false, "field 'qk_rope_head_dim' is 63; must be even"},
      {"/q_lora_rank", nullptr, true, "missing required field 'q_lora_rank'"},
      {"/q_lora_rank", 0, false, "field 'q_lora_rank' is 0"},
      {"/num_key_value_heads", 0, false, "field 'num_key_value_heads'"},
      {"/n_routed_experts", nullptr, true, "missing required field 'n_routed_experts'"},
      {"/moe_intermediate_size", nullptr, true, "missing required field 'moe_intermediate_size'"},
      {"/num_experts_per_tok", 0, false, "field 'num_experts_per_tok' is 0"},
      {"/num_experts_per_tok", 300, false, "field 'num_experts_per_tok' is 300"},
      // topk_group 4 of 8 groups of 32 experts reach 128 experts.
      {"/num_experts_per_tok", 129, false, "field 'num_experts_per_tok' is 129"},
      {"/n_group", 7, false, "field 'n_group' is 7; must divide n_routed_experts"},
      {"/n_group", 0, false, "field 'n_group' is 0"},
      {"/topk_group", 9, false, "field 'topk_group' is 9; must be <= n_group"},
      {"/moe_layer_freq", 0, false, "field 'moe_layer_freq'"},
      {"/first_k_dense_replace", -2, false, "field 'first_k_dense_replace'"},
      {"/n_shared_experts", -1, false, "field 'n_shared_experts'"},
      {"/scoring_func", "softmax2", false,
       "config.json: field 'scoring_func' is 'softmax2'; supported: sigmoid, softmax"},
      {"/topk_method", "random", false,
       "field 'topk_method' is 'random'; supported: noaux_tc, greedy, group_limited_greedy"},
      {"/hidden_act", "gelu", false, "field 'hidden_act' is 'gelu'; supported: silu"},
      {"/norm_topk_prob", "yes", false, "field 'norm_topk_prob' must be a boolean"},
      {"/routed_scaling_factor", "2.5", false, "field 'routed_scaling_factor' must be a number"},
      {"/attention_bias", true, false, "field 'attention_bias'"},
      {"/rms_norm_eps", 0, false, "field 'rms_norm_eps'"},
      {"/rope_theta", -1, false, "field 'rope_theta'"},
      {"/max_position_embeddings", 0, false, "field 'max_position_embeddings'"},
      {"/rope_scaling", 5, false, "field 'rope_scaling' must be an object"},
      {"/rope_scaling/type", "linear", false,
       "field 'rope_scaling.type' is 'linear'; supported: yarn"},
      {"/rope_scaling/type", "dynamic", false, "field 'rope_scaling.type' is 'dynamic'"},
      {"/rope_scaling/factor", "40", false, "field 'rope_scaling.factor' must be a number"},
      {"/rope_scaling/factor", nullptr, true, "missing required field 'rope_scaling.factor'"},
      {"/rope_scaling/factor", 0, false, "field 'rope_scaling.factor'"},
      {"/rope_scaling/original_max_position_embeddings", 0, false,
       "field 'rope_scaling.original_max_position_embeddings'"},
      {"/rope_scaling/mscale_all_dim", "1", false, "field 'rope_scaling.mscale_all_dim'"},
      {"/bos_token_id", 129280, false, "field 'bos_token_id' is 129280"},
      {"/eos_token_id", "1", false, "field 'eos_token_id' must be an integer"},
      {"/eos_token_id", Json::array({1, 200000}), false, "field 'eos_token_id' has 200000"},
      {"/eos_token_id", Json::array(), false, "field 'eos_token_id' is an empty list"},
      {"/tie_word_embeddings", 0, false, "field 'tie_word_embeddings' must be a boolean"},
      {"/quantization_config", "fp8", false, "field 'quantization_config' must be an object"},
      {"/quantization_config/quant_method", "gptq", false,
       "field 'quantization_config.quant_method' is 'gptq'; supported: fp8"},
      {"/quantization_config/quant_method", nullptr, true,
       "missing required field 'quantization_config.quant_method'"},
      {"/quantization_config/fmt", "e5m2", false,
       "field 'quantization_config.fmt' is 'e5m2'; supported: e4m3"},
      {"/quantization_config/activation_scheme", "static", false,
       "field 'quantization_config.activation_scheme' is 'static'"},
      {"/quantization_config/scale_fmt", "e8m0", false,
       "field 'quantization_config.scale_fmt' is 'e8m0'; supported: ue8m0"},
      {"/quantization_config/weight_block_size", Json::array({128}), false,
       "field 'quantization_config.weight_block_size' must be two positive integers"},
      {"/quantization_config/weight_block_size", Json::array({128, 0}), false,
       "field 'quantization_config.weight_block_size' is [128,0]"},
      {"/quantization_config/weight_block_size", Json::array({128, "a"}), false,
       "field 'quantization_config.weight_block_size' must be an integer"},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.pointer + " = " + row.value.dump());
    Json j = V3();
    const Json::json_pointer ptr(row.pointer);
    if (row.erase) {
      j[ptr.parent_pointer()].erase(ptr.back());
    } else {
      j[ptr] = row.value;
    }
    auto c = ModelConfig::FromJson(j.dump(), "/models/v3/config.json");
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr("/models/v3/config.json: "));
    EXPECT_THAT(c.status().message(), HasSubstr(row.expected));
  }
}

// Bug 2: "num_hidden_layers": 1000000000 aborted dsv3-generate and dsv3-server with
// std::bad_alloc. Sizes the engine allocates by have limits, and the error names the field.
TEST(ModelConfigTest, SizesBeyondTheLimitsAreRefusedNamingTheField) {
  const std::vector<std::pair<std::string, int64_t>> rows = {
      {"num_hidden_layers", 1000000000}, {"num_hidden_layers", 1025},
      {"vocab_size", int64_t{1} << 40},  {"hidden_size", 65537},
      {"kv_lora_rank", 1 << 20},         {"q_lora_rank", 1 << 20},
      {"n_routed_experts", 1 << 20},     {"max_position_embeddings", int64_t{1} << 40}};
  for (const auto& [field, value] : rows) {
    Json j = V3();
    j[field] = value;
    const auto c = Parse(j);
    ASSERT_FALSE(c.ok()) << field;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()),
                HasSubstr("field '" + field + "' is " + std::to_string(value) + "; at most"));
  }
  Json j = V3();
  j["num_hidden_layers"] = 1024;
  EXPECT_TRUE(Parse(j).ok());
}

TEST(ModelConfigTest, MalformedJson) {
  for (const char* text : {"", "{", "[1, 2]", "\"text\"", "{\"model_type\": }", "\xff\xfe"}) {
    SCOPED_TRACE(text);
    auto c = ModelConfig::FromJson(text, "cfg.json");
    ASSERT_FALSE(c.ok());
    EXPECT_THAT(c.status().message(), HasSubstr("cfg.json: "));
  }
}

TEST(ModelConfigTest, FromModelDir) {
  TempDir dir;
  auto missing = ModelConfig::FromModelDir(dir.path().string());
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr(dir.file("config.json")));

  std::ofstream(dir.file("config.json")) << kDeepSeekV3Config;
  auto c = ModelConfig::FromModelDir(dir.path().string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 7168);

  std::ofstream(dir.file("config.json")) << R"({"model_type": "deepseek_v3"})";
  auto bad = ModelConfig::FromModelDir(dir.path().string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr(dir.file("config.json") + ": missing required field 'vocab_size'"));
}

}  // namespace
}  // namespace dsv3::config_model_config_test
