// dsv3-generate as users run it: stdout format, --logits-out, and clean failures on damaged
// checkpoints (a non-zero exit, never a signal, and one error line naming the file).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/util/npy.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace dsv3::generate_cli_test {
namespace {

using ::dsv3::testing::CommandResult;
using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RunCommand;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::ToolPath;

std::string Generate(const std::string& args) {
  return ToolPath("dsv3-generate") + " " + args;
}

nlohmann::json Reference(const std::string& fixture) {
  std::ifstream in(FixturePath(fixture + "-ref/prompts.json"));
  return nlohmann::json::parse(in);
}

std::string Ids(const std::vector<int32_t>& ids) { return absl::StrJoin(ids, ","); }

TEST(GenerateCliTest, OneLinePerPromptWithTheReferenceContinuations) {
  const auto ref = Reference("ragged");
  const auto prompts = ref["prompts"].get<std::vector<std::vector<int32_t>>>();
  const auto want = ref["continuations"].get<std::vector<std::vector<int32_t>>>();
  const CommandResult r =
      RunCommand(Generate("--model " + FixturePath("ragged-fp8") + " --prompt-ids " +
                          Ids(prompts[1]) + " --prompt-ids " + Ids(prompts[2]) +
                          " --max-new-tokens " + std::to_string(ref["max_new_tokens"].get<int>())));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrJoin(want[1], " ") + "\n" + absl::StrJoin(want[2], " ") + "\n");
}

TEST(GenerateCliTest, LogitsOutWritesEveryPromptPosition) {
  TempDir dir;
  const auto prompts = Reference("tiny")["prompts"].get<std::vector<std::vector<int32_t>>>();
  const CommandResult r = RunCommand(
      Generate("--model " + FixturePath("tiny-bf16") + " --prompt-ids " + Ids(prompts[2]) +
               " --max-new-tokens 1 --logits-out " + dir.file("l.npy")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto logits = ReadNpyF32(dir.file("l.npy"));
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->shape, (std::vector<int64_t>{static_cast<int64_t>(prompts[2].size()), 1024}));
}

// Every prompt of the fixture in one file, through a pool so small that sequences are preempted:
// the outputs are still transformers' greedy continuations, in file order.
TEST(GenerateCliTest, PromptsFileWithPreemptionMatchesTheReference) {
  TempDir dir;
  const auto ref = Reference("tiny");
  const auto prompts = ref["prompts"].get<std::vector<std::vector<int32_t>>>();
  const auto want = ref["continuations"].get<std::vector<std::vector<int32_t>>>();
  std::ofstream(dir.file("prompts.txt")) << [&] {
    std::string text;
    for (const auto& p : prompts) text += Ids(p) + "\n";
    return text;
  }();
  const CommandResult r = RunCommand(Generate(
      "--model " + FixturePath("tiny-fp8") + " --prompts-file " + dir.file("prompts.txt") +
      " --max-new-tokens 16 --kv-blocks 24 --block-size 16" + " --max-batched-tokens 32 --stats"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string expected;
  for (const auto& c : want) expected += absl::StrJoin(c, " ") + "\n";
  EXPECT_EQ(r.out, expected);
  const std::string stats_line = r.err.substr(r.err.rfind('{'));
  const auto stats = nlohmann::json::parse(stats_line);
  EXPECT_GT(stats["preemptions"].get<int>(), 0) << stats_line;
  EXPECT_EQ(stats["kv_blocks_used"].get<int>(), 0);
}

// A copy of a fixture with one shard cut short.
TEST(GenerateCliTest, TruncatedShardFailsWithTheFileName) {
  TempDir dir;
  const std::string model = dir.file("model");
  ::dsv3::testing::CopyTree(FixturePath("tiny-fp8"), model);
  const std::string shard = model + "/model-00002-of-00004.safetensors";
  for (const auto keep : {std::filesystem::file_size(shard) / 2, uintmax_t{100}, uintmax_t{5}}) {
    std::filesystem::resize_file(shard, keep);
    const CommandResult r =
        RunCommand(Generate("--model " + model + " --prompt-ids 1,2,3 --max-new-tokens 2"));
    EXPECT_FALSE(r.signaled) << "kept " << keep << " bytes: " << r.err;
    EXPECT_NE(r.exit_code, 0) << "kept " << keep << " bytes";
    EXPECT_NE(r.err.find("model-00002-of-00004.safetensors"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty());
  }
}

TEST(GenerateCliTest, MissingShardFailsWithTheFileName) {
  TempDir dir;
  const std::string model = dir.file("model");
  ::dsv3::testing::CopyTree(FixturePath("tiny-fp8"), model);
  std::filesystem::remove(model + "/model-00003-of-00004.safetensors");
  const CommandResult r =
      RunCommand(Generate("--model " + model + " --prompt-ids 1,2,3 --max-new-tokens 2"));
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("model-00003-of-00004.safetensors"), std::string::npos) << r.err;
}

// A copy of the tiny-fp8 fixture whose config.json says `num_hidden_layers`.
std::string ModelWithLayers(const TempDir& dir, int64_t num_hidden_layers) {
  const std::string model = dir.file("model");
  ::dsv3::testing::CopyTree(FixturePath("tiny-fp8"), model);
  nlohmann::json config;
  std::ifstream(model + "/config.json") >> config;
  config["num_hidden_layers"] = num_hidden_layers;
  std::ofstream(model + "/config.json") << config.dump(2);
  return model;
}

// Bug 2: "num_hidden_layers": 1000000000 aborted dsv3-generate and dsv3-server with
// std::bad_alloc (exit 134).
TEST(GenerateCliTest, HugeLayerCountFailsNamingTheField) {
  TempDir dir;
  const std::string model = ModelWithLayers(dir, 1000000000);
  const CommandResult generate =
      RunCommand(Generate("--model " + model + " --prompt-ids 1,2,3 --max-new-tokens 2"));
  EXPECT_FALSE(generate.signaled) << generate.err;
  EXPECT_EQ(generate.exit_code, 1);
  EXPECT_NE(generate.err.find("config.json: field 'num_hidden_layers' is 1000000000; at most"),
            std::string::npos)
      << generate.err;
  const CommandResult server =
      RunCommand("timeout -s KILL 60 " + ::dsv3::testing::BinaryPath("server/dsv3-server") +
                 " --model " + model + " --listen 127.0.0.1:0 --metrics-listen '' --threads 1");
  EXPECT_FALSE(server.signaled) << server.err;
  EXPECT_EQ(server.exit_code, 1);
  EXPECT_NE(server.err.find("field 'num_hidden_layers' is 1000000000"), std::string::npos)
      << server.err;
}

TEST(GenerateCliTest, MoreLayersThanTheCheckpointFailsNamingTheTensor) {
  TempDir dir;
  const std::string model = ModelWithLayers(dir, 40);
  const CommandResult r =
      RunCommand(Generate("--model " + model + " --prompt-ids 1,2,3 --max-new-tokens 2"));
  EXPECT_FALSE(r.signaled) << r.err;
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("num_hidden_layers is 40, but the checkpoint has no layer 39 (no tensor "
                       "'model.layers.39.input_layernorm.weight')"),
            std::string::npos)
      << r.err;
}

TEST(GenerateCliTest, TokenIdOutsideTheVocabularyIsRejected) {
  const CommandResult r = RunCommand(
      Generate("--model " + FixturePath("tiny-fp8") + " --prompt-ids 1,5000 --max-new-tokens 2"));
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("5000"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsv3::generate_cli_test
