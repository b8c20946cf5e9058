// The tests' random smoke model: generated deterministically, loadable, marked as random.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/config/model_config.h"
#include "engine/weights/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/smoke_model.h"
#include "tests/test_util.h"

namespace dsv3::testing::server_smoke_model_test {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ServerSmokeModel, GeneratedOnceDeterministicallyAndLoadable) {
  TempDir a, b;
  auto dir = EnsureSmokeModel(a.path().string(), DSV3_TOKENIZER_DIR);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_TRUE(std::filesystem::exists(*dir + "/" + server::kRandomModelMarker));
  EXPECT_TRUE(std::filesystem::exists(*dir + "/tokenizer.json"));
  // No temporary directory is left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(a.path()), {}), 1);

  auto config = ModelConfig::FromModelDir(*dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "deepseek_v3");
  EXPECT_EQ(config->vocab_size, 129280);
  EXPECT_EQ(config->num_hidden_layers, 2);
  EXPECT_TRUE(config->is_moe_layer(1));
  EXPECT_FALSE(config->is_moe_layer(0));
  auto ckpt = Checkpoint::Open(*dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE((*ckpt)->Has("model.layers.1.mlp.experts.7.down_proj.weight"));
  EXPECT_TRUE((*ckpt)->Has("lm_head.weight"));

  // A second call reuses it; another cache gets byte-identical weights.
  auto again = EnsureSmokeModel(a.path().string(), DSV3_TOKENIZER_DIR);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *dir);
  auto other = EnsureSmokeModel(b.path().string(), DSV3_TOKENIZER_DIR);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(Slurp(*dir + "/model.safetensors"), Slurp(*other + "/model.safetensors"));
}

TEST(ServerSmokeModel, MissingTokenizerFailsCleanly) {
  TempDir cache;
  auto dir = EnsureSmokeModel(cache.path().string(), cache.file("no-such-dir"));
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(std::string(dir.status().message()).find("tokenizer.json"), std::string::npos);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(cache.path()), {}), 0);
}

}  // namespace
}  // namespace dsv3::testing::server_smoke_model_test
