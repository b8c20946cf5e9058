// dsv3-eval as users run it on the tiny fixture: the JSON it prints, its windows (pinned by
// comparing its saved logits with dsv3-generate's logits of the same tokens), KL against a saved
// run, --text-file, and clean failures on bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "engine/util/npy.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace dsv3::eval_cli_test {
namespace {

using ::dsv3::testing::CommandResult;
using ::dsv3::testing::RunCommand;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::FixturePath;
using ::dsv3::testing::ToolPath;

constexpr int64_t kVocab = 1024;

std::string Model(const std::string& name = "tiny-fp8") { return FixturePath(name); }

std::vector<std::vector<int32_t>> Prompts() {
  std::ifstream in(FixturePath("tiny-ref") + "/prompts.json");
  return nlohmann::json::parse(in)["prompts"].get<std::vector<std::vector<int32_t>>>();
}

std::string WriteIds(const TempDir& dir, const std::vector<std::vector<int32_t>>& lines,
                     const std::string& name = "ids.txt") {
  std::ofstream out(dir.file(name));
  for (const auto& line : lines) out << absl::StrJoin(line, ",") << "\n";
  return dir.file(name);
}

// Runs dsv3-eval and parses its stdout; fails the test unless it exits 0.
nlohmann::json Eval(const std::string& args) {
  const CommandResult r = RunCommand(ToolPath("dsv3-eval") + " " + args);
  EXPECT_FALSE(r.signaled) << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return nlohmann::json::object();
  return nlohmann::json::parse(r.out);
}

// dsv3-generate's logits of every position of `ids`, [T, V].
NpyArray GenerateLogits(const TempDir& dir, const std::vector<int32_t>& ids) {
  const std::string path = dir.file("generate.npy");
  const CommandResult r = RunCommand(ToolPath("dsv3-generate") + " --model " + Model() +
                                     " --max-new-tokens 0 --prompt-ids " + absl::StrJoin(ids, ",") +
                                     " --logits-out " + path);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto logits = ReadNpyF32(path);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *std::move(logits) : NpyArray{};
}

// Rows [row, row + count) of `saved` against rows [from, from + count) of `want`.
void ExpectRowsNear(const NpyArray& saved, int64_t row, const NpyArray& want, int64_t from,
                    int64_t count, const std::string& what) {
  ASSERT_LE((row + count) * kVocab, static_cast<int64_t>(saved.data.size())) << what;
  ASSERT_LE((from + count) * kVocab, static_cast<int64_t>(want.data.size())) << what;
  for (int64_t r = 0; r < count; ++r) {
    for (int64_t v = 0; v < kVocab; ++v) {
      ASSERT_NEAR(saved.data[(row + r) * kVocab + v], want.data[(from + r) * kVocab + v], 1e-5)
          << what << ": saved row " << row + r << ", vocabulary entry " << v;
    }
  }
}

TEST(EvalCliTest, ShortLinesAreOneWindowEachWithEveryPositionScored) {
  TempDir dir;
  const auto prompts = Prompts();  // lengths 1, 5, 17, 64, ...
  const auto j =
      Eval("--model " + Model() + " --ids-file " + WriteIds(dir, {prompts[1], prompts[2]}));
  EXPECT_EQ(j["tokens"], 4 + 16) << j;
  EXPECT_EQ(j["windows"], 2);
  EXPECT_EQ(j["sequences"], 2);
  EXPECT_EQ(j["context"], 512);
  EXPECT_EQ(j["vocab"], kVocab);
  const double ppl = j["ppl"].get<double>();
  EXPECT_TRUE(std::isfinite(ppl) && ppl > 1) << j;
  EXPECT_NEAR(std::exp(j["nll"].get<double>()), ppl, 1e-9 * ppl);
  EXPECT_FALSE(j.contains("kld_mean"));
}

TEST(EvalCliTest, SavedLogitsAreGeneratesLogitsOfThePromptPositions) {
  TempDir dir;
  const auto prompt = Prompts()[2];  // 17 tokens: rows 0..15 are scored
  const auto j = Eval("--model " + Model() + " --ids-file " + WriteIds(dir, {prompt}) +
                      " --save-logits " + dir.file("eval.npy"));
  ASSERT_EQ(j["tokens"], 16);
  auto saved = ReadNpyF32(dir.file("eval.npy"));
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->shape, (std::vector<int64_t>{16, kVocab}));
  ExpectRowsNear(*saved, 0, GenerateLogits(dir, prompt), 0, 16, "one window");
}

// 20 tokens, --context 8: windows [0, 8), [8, 16), [16, 20) scoring positions 4..6, 4..6, 2;
// each window is a fresh sequence from position 0, two per step.
TEST(EvalCliTest, LongLinesScoreTheSecondHalfOfEachWindow) {
  TempDir dir;
  const auto long_prompt = Prompts()[3];
  const std::vector<int32_t> line(long_prompt.begin(), long_prompt.begin() + 20);
  const auto j = Eval("--model " + Model() + " --ids-file " + WriteIds(dir, {line}) +
                      " --context 8 --batch-windows 2 --save-logits " + dir.file("eval.npy"));
  ASSERT_EQ(j["tokens"], 3 + 3 + 1) << j;
  EXPECT_EQ(j["windows"], 3);
  auto saved = ReadNpyF32(dir.file("eval.npy"));
  ASSERT_TRUE(saved.ok()) << saved.status();
  const auto piece = [&](int begin, int end) {
    return std::vector<int32_t>(line.begin() + begin, line.begin() + end);
  };
  ExpectRowsNear(*saved, 0, GenerateLogits(dir, piece(0, 8)), 4, 3, "window 1");
  ExpectRowsNear(*saved, 3, GenerateLogits(dir, piece(8, 16)), 4, 3, "window 2");
  ExpectRowsNear(*saved, 6, GenerateLogits(dir, piece(16, 20)), 2, 1, "window 3");
}

TEST(EvalCliTest, KlOfARunAgainstItsOwnSavedLogitsIsZero) {
  TempDir dir;
  const auto prompts = Prompts();
  const std::string ids = WriteIds(dir, {prompts[2], prompts[3]});
  const auto first = Eval("--model " + Model() + " --ids-file " + ids + " --context 32" +
                          " --save-logits " + dir.file("base.npy"));
  const auto again = Eval("--model " + Model() + " --ids-file " + ids + " --context 32" +
                          " --kl-base " + dir.file("base.npy"));
  ASSERT_TRUE(again.contains("kld_mean")) << again;
  EXPECT_EQ(again["tokens"], first["tokens"]);
  EXPECT_LT(again["kld_mean"].get<double>(), 1e-12) << again;
  EXPECT_LT(again["kld_max"].get<double>(), 1e-12) << again;
  EXPECT_EQ(again["top1_agree"], 1.0) << again;
  EXPECT_NEAR(again["ppl_ratio"].get<double>(), 1.0, 1e-12) << again;
  EXPECT_NEAR(again["ppl_base"].get<double>(), first["ppl"].get<double>(), 1e-9) << again;

  // Another model with the same vocabulary against the saved run: far, but measured.
  const auto other = Eval("--model " + Model("smooth-fp8") + " --ids-file " + ids +
                          " --context 32 --kl-base " + dir.file("base.npy"));
  ASSERT_TRUE(other.contains("kld_mean")) << other;
  EXPECT_GT(other["kld_mean"].get<double>(), 0) << other;
  EXPECT_LE(other["kld_mean"].get<double>(), other["kld_max"].get<double>());
  EXPECT_LE(other["kld_p99"].get<double>(), other["kld_max"].get<double>());
  EXPECT_LT(other["top1_agree"].get<double>(), 1.0) << other;
  EXPECT_NEAR(other["ppl_base"].get<double>(), first["ppl"].get<double>(), 1e-9) << other;
  EXPECT_NEAR(other["ppl_ratio"].get<double>(),
              other["ppl"].get<double>() / first["ppl"].get<double>(), 1e-9)
      << other;
}

// The DeepSeek-V3 tokenizer maps this text to ids below the fixture's vocabulary of 1024.
TEST(EvalCliTest, TextFileIsTokenizedWithBosFirstAndScoredAsOneSequence) {
  TempDir dir;
  std::ofstream(dir.file("text.txt")) << "a b c d e f g, h. i; j: k";
  const auto text = Eval("--model " + Model() + " --tokenizer " + DSV3_TOKENIZER_DIR +
                         " --text-file " + dir.file("text.txt"));
  const auto ids = Eval(
      "--model " + Model() + " --ids-file " +
      WriteIds(dir, {{0, 67, 291, 274, 283, 312, 285, 336, 14, 310, 16, 1008, 29, 597, 28, 473}}));
  EXPECT_EQ(text["tokens"], 15) << text;
  EXPECT_EQ(text["windows"], 1);
  EXPECT_EQ(text["nll"], ids["nll"]) << text << "\n" << ids;
}

void ExpectFailure(const std::string& args, const std::vector<std::string>& fragments) {
  const CommandResult r = RunCommand(ToolPath("dsv3-eval") + " " + args);
  EXPECT_FALSE(r.signaled) << r.err;
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  for (const std::string& f : fragments) {
    EXPECT_NE(r.err.find(f), std::string::npos) << "'" << f << "' not in: " << r.err;
  }
}

TEST(EvalCliTest, ABaseOfAnotherRowCountIsRefusedNamingTheMismatch) {
  TempDir dir;
  const auto prompts = Prompts();
  Eval("--model " + Model() + " --ids-file " + WriteIds(dir, {prompts[2]}) + " --save-logits " +
       dir.file("base.npy"));
  ExpectFailure("--model " + Model() + " --ids-file " + WriteIds(dir, {prompts[1]}, "other.txt") +
                    " --kl-base " + dir.file("base.npy"),
                {"--kl-base", "[16, 1024]", "[4, 1024]", "rows: differ"});
  ExpectFailure("--model " + Model() + " --ids-file " + WriteIds(dir, {prompts[1]}, "other.txt") +
                    " --kl-base " + dir.file("missing.npy"),
                {"missing.npy"});
}

TEST(EvalCliTest, BadIdsFilesAreRefusedNamingTheLine) {
  TempDir dir;
  std::ofstream(dir.file("big.txt")) << "1,2,3\n4,5000,6\n";
  ExpectFailure("--model " + Model() + " --ids-file " + dir.file("big.txt"),
                {"line 2", "token id 5000 is outside the vocabulary [0, 1024)"});
  std::ofstream(dir.file("word.txt")) << "1,2,three\n";
  ExpectFailure("--model " + Model() + " --ids-file " + dir.file("word.txt"),
                {"line 1", "'three' is not a token id"});
  std::ofstream(dir.file("short.txt")) << "7\n";
  ExpectFailure("--model " + Model() + " --ids-file " + dir.file("short.txt"), {"at least 2"});
  std::ofstream(dir.file("empty.txt")) << "";
  ExpectFailure("--model " + Model() + " --ids-file " + dir.file("empty.txt"), {"no sequence"});
  ExpectFailure("--model " + Model(), {"exactly one of --text-file and --ids-file"});
}

TEST(EvalCliTest, TextBeyondTheModelsVocabularyIsRefused) {
  TempDir dir;
  std::ofstream(dir.file("text.txt")) << "The cat sat on the mat.";
  ExpectFailure("--model " + Model() + " --tokenizer " + DSV3_TOKENIZER_DIR + " --text-file " +
                    dir.file("text.txt"),
                {"--text-file", "outside the model's vocabulary [0, 1024)"});
  ExpectFailure("--model " + Model() + " --text-file " + dir.file("text.txt"),
                {"tokenizer (--tokenizer, default --model)"});
}

}  // namespace
}  // namespace dsv3::eval_cli_test
