// Data-parallel attention with expert parallelism end to end on the CPU, through dsv3-generate
// --tp N --dp-attention (gloo over loopback): the requests are spread over the attention ranks,
// and every request's greedy tokens must equal TP=1's, with every KV block of every rank back
// at the end, with MTP speculative decoding too; the logits of one prompt equal TP=1's within
// 1e-4. Unsupported combinations fail with errors that name the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <ostream>
#include <string>

#include "engine/util/npy.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace dsv3::parallel_dp_attention_test {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RunCommand;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::ToolPath;

const char* kPrompt = "918,349,723,81,739,677,388,490,471,40,174,444,470,644,418,66,46";

std::string Generate(const std::string& args) {
  return ToolPath("dsv3-generate") + " --threads 1 --kv-memory-mb 16 --model " +
         FixturePath("tiny-fp8") + " " + args;
}

// --stats prints the engine counters as the last line of stderr.
nlohmann::json StatsOf(const std::string& err) {
  const size_t begin = err.rfind("\n{");
  return nlohmann::json::parse(err.substr(begin == std::string::npos ? 0 : begin + 1));
}

struct Case {
  int tp;
  std::string prompts;  // one prompt per line
};

// gtest prints the case by its name, not as bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << "tp" << c.tp; }

class DpAttentionGenerateTest : public ::testing::TestWithParam<Case> {};

TEST_P(DpAttentionGenerateTest, GreedyTokensMatchOneRankAndEveryBlockComesBack) {
  const Case& c = GetParam();
  TempDir dir;
  const std::string prompts = dir.file("prompts.txt");
  {
    std::ofstream out(prompts);
    out << c.prompts;
  }
  const std::string args = "--prompts-file " + prompts + " --max-new-tokens 12 --stats";
  const auto one = RunCommand(Generate(args));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const auto dp = RunCommand(Generate(args + " --tp " + std::to_string(c.tp) + " --dp-attention"));
  ASSERT_EQ(dp.exit_code, 0) << dp.err;
  EXPECT_EQ(dp.out, one.out);
  EXPECT_NE(dp.err.find("on each of " + std::to_string(c.tp) + " attention ranks"),
            std::string::npos)
      << dp.err;
  const nlohmann::json one_stats = StatsOf(one.err), dp_stats = StatsOf(dp.err);
  EXPECT_EQ(dp_stats["kv_blocks_total"].get<int64_t>(),
            c.tp * one_stats["kv_blocks_total"].get<int64_t>());
  EXPECT_EQ(dp_stats["kv_blocks_used"].get<int64_t>(), 0);
  EXPECT_EQ(dp_stats["kv_blocks_free"], dp_stats["kv_blocks_total"]);
  EXPECT_EQ(dp_stats["generated_tokens"], one_stats["generated_tokens"]);
}

INSTANTIATE_TEST_SUITE_P(
    Spreads, DpAttentionGenerateTest,
    ::testing::Values(
        // Five requests on two ranks (3 and 2), of different lengths.
        Case{2, "918,349,723,81,739\n7,8,9\n11,12,13,14,15,16,17,18,19,20,21,22,23\n20,21\n"
                "30,31,32,33,34,35\n"},
        // Three requests on four ranks: rank 3 has none in any step.
        Case{4, "918,349,723,81,739\n7,8,9\n11,12,13,14,15,16,17,18,19,20,21,22,23\n"}),
    [](const auto& info) { return "tp" + std::to_string(info.param.tp); });

// MTP speculative decoding on every attention rank (each drafts and verifies its own requests;
// the MTP layer's MoE exchanges tokens as the main layers' do): the same greedy tokens as one
// rank without speculation, drafts verified (the fixtures' MTP modules are random, so few are
// accepted), every block back.
TEST(DpAttentionGenerateTest, SpeculativeGreedyTokensMatchOneRankWithout) {
  TempDir dir;
  const std::string prompts = dir.file("prompts.txt");
  {
    std::ofstream out(prompts);
    out << "918,349,723,81,739\n7,8,9\n11,12,13,14,15,16,17,18,19,20,21,22,23\n20,21\n";
  }
  const std::string args = "--prompts-file " + prompts + " --max-new-tokens 12 --stats";
  const auto one = RunCommand(Generate(args));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  for (int tp : {2, 4}) {
    const auto dp = RunCommand(Generate(args + " --tp " + std::to_string(tp) +
                                        " --dp-attention --speculative-tokens 2"));
    ASSERT_EQ(dp.exit_code, 0) << dp.err;
    EXPECT_EQ(dp.out, one.out) << "tp " << tp;
    const nlohmann::json stats = StatsOf(dp.err);
    EXPECT_GT(stats["spec_proposed"][0].get<int64_t>(), 0) << "tp " << tp;
    EXPECT_EQ(stats["kv_blocks_used"].get<int64_t>(), 0) << "tp " << tp;
  }
}

TEST(DpAttentionGenerateTest, LogitsMatchOneRank) {
  TempDir dir;
  const std::string args = std::string("--prompt-ids ") + kPrompt + " --max-new-tokens 1 --logits-out ";
  ASSERT_EQ(RunCommand(Generate(args + dir.file("tp1.npy"))).exit_code, 0);
  const auto r = RunCommand(Generate(args + dir.file("dp2.npy") + " --tp 2 --dp-attention"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto want = ReadNpyF32(dir.file("tp1.npy"));
  auto got = ReadNpyF32(dir.file("dp2.npy"));
  ASSERT_TRUE(want.ok() && got.ok());
  ASSERT_EQ(got->shape, want->shape);
  float max_diff = 0;
  for (size_t i = 0; i < want->data.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(got->data[i] - want->data[i]));
  }
  EXPECT_LE(max_diff, 1e-4f);
}

TEST(DpAttentionGenerateTest, UnsupportedCombinationsFailNamingTheProblem) {
  const std::string prompt = std::string("--prompt-ids ") + kPrompt + " --max-new-tokens 2 ";
  const struct {
    std::string flags;
    std::string error;
  } cases[] = {
      {"--tp 3 --dp-attention", "n_routed_experts (8) is not divisible"},
      {"--dp-attention", "--dp-attention needs several ranks"},
  };
  for (const auto& c : cases) {
    const auto r = RunCommand(Generate(prompt + c.flags));
    EXPECT_NE(r.exit_code, 0) << c.flags;
    EXPECT_NE(r.err.find(c.error), std::string::npos) << c.flags << ": " << r.err;
  }
}

}  // namespace
}  // namespace dsv3::parallel_dp_attention_test
