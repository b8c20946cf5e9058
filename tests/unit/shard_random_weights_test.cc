// ModelWeights::Random with a tensor-parallel Shard (what dsv3-bench --tp loads on each rank):
// every weight has this rank's slice shape, the experts are this rank's E/world, and a world
// that does not divide a split dimension is refused by name. Table-driven over the smooth
// fixture's shapes (8 heads, 8 experts, widths multiples of 128).
#include <gtest/gtest.h>

#include <string>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/config/model_config.h"
#include "engine/model/model_weights.h"
#include "tests/test_util.h"

namespace dsv3::shard_random_weights_test {
namespace {

ModelConfig SmoothConfig() {
  auto config = ModelConfig::FromModelDir(testing::FixturePath("smooth-fp8"));
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

struct ShardCase {
  int rank, world;
};

class RandomShardTest : public ::testing::TestWithParam<ShardCase> {};

TEST_P(RandomShardTest, EveryWeightHasThisRanksSliceShape) {
  const auto [rank, world] = GetParam();
  const ModelConfig c = SmoothConfig();
  CpuBackend cpu(1);
  auto w = ModelWeights::Random(c, cpu, 7, Shard{rank, world});
  ASSERT_TRUE(w.ok()) << w.status();
  const int64_t nh = c.num_attention_heads / world;
  EXPECT_EQ((*w)->embed.dim(0), c.vocab_size / world);
  EXPECT_EQ((*w)->lm_head.n(), c.vocab_size / world);
  for (const LayerWeights& layer : (*w)->layers) {
    const AttentionWeights& a = layer.attn;
    ASSERT_TRUE(a.q_b.has_value());
    ASSERT_EQ(a.qkv_a.parts.size(), 2u);
    EXPECT_EQ(a.qkv_a.parts[0].n, c.q_lora_rank.value());                // replicated
    EXPECT_EQ(a.qkv_a.parts[1].n, c.kv_lora_rank + c.qk_rope_head_dim);  // replicated
    EXPECT_EQ(a.q_b->n(), nh * (c.qk_nope_head_dim + c.qk_rope_head_dim));
    EXPECT_EQ(a.kv_b.n(), nh * (c.qk_nope_head_dim + c.v_head_dim));
    EXPECT_EQ(a.o.n(), c.hidden_size);
    EXPECT_EQ(a.o.k(), nh * c.v_head_dim);
    if (layer.is_moe) {
      EXPECT_EQ(static_cast<int64_t>(layer.moe.experts.size()), c.n_routed_experts / world);
      EXPECT_EQ(layer.moe.shared.gate_up.parts[0].n,
                c.moe_intermediate_size * c.n_shared_experts / world);
      EXPECT_EQ(layer.moe.shared.down.k(), c.moe_intermediate_size * c.n_shared_experts / world);
      EXPECT_EQ(layer.moe.router.dim(0), c.n_routed_experts);  // every rank routes every token
    } else {
      EXPECT_EQ(layer.dense_mlp.gate_up.parts[1].n, c.intermediate_size / world);
      EXPECT_EQ(layer.dense_mlp.down.k(), c.intermediate_size / world);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shards, RandomShardTest,
                         ::testing::Values(ShardCase{0, 1}, ShardCase{1, 2}, ShardCase{3, 4},
                                           ShardCase{7, 8}),
                         [](const auto& info) {
                           return "rank" + std::to_string(info.param.rank) + "_of_" +
                                  std::to_string(info.param.world);
                         });

TEST(RandomShardTest, WorldThatDoesNotDivideTheHeadsIsRefusedByName) {
  const ModelConfig c = SmoothConfig();
  CpuBackend cpu(1);
  auto w = ModelWeights::Random(c, cpu, 7, Shard{0, 16});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(w.status().message()).find("num_attention_heads"), std::string::npos)
      << w.status();
}

}  // namespace
}  // namespace dsv3::shard_random_weights_test
