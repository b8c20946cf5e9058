// Tensor parallelism on two GPUs (the nvidia-h200-x2 device), end to end through
// `dsv3-generate --device cuda --tp 2`: the launcher spawns rank 1 on GPU 1 (LOCAL_RANK), each
// rank loads its shard (FP8 slices on 128-blocks, BF16 fallback where a slice cuts a block),
// and the model's all-reduces and the head's all-gather run over NCCL on the backends' streams.
// The prompt logits must equal one GPU's (--tp 1) within kMultiGpuLogitTol, and wherever one GPU's
// top-2 margin exceeds kGreedyMargin the two agree on the greedy token. FP8 slices that cut scale
// blocks are refused. MTP speculative decoding on two GPUs (--tp 2, and --tp 2 --dp-attention)
// keeps the greedy output of the same split without it on the demo model. Skipped without two
// GPUs.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_join.h"
#include "engine/util/npy.h"
#include "nlohmann/json.hpp"
#include "tests/demo_model.h"
#include "tests/fixture_reference.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RunCommand;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::ToolPath;

// Logits [T, V] of one prompt's positions from dsv3-generate on the GPU.
absl::StatusOr<NpyArray> PromptLogits(const std::string& checkpoint,
                                      const std::vector<int32_t>& prompt, int tp,
                                      const std::string& out) {
  const auto r =
      RunCommand(ToolPath("dsv3-generate") + " --device cuda --tp " + std::to_string(tp) +
                 " --model " + FixturePath(checkpoint) + " --prompt-ids " +
                 absl::StrJoin(prompt, ",") + " --max-new-tokens 1 --logits-out " + out);
  if (r.signaled || r.exit_code != 0) {
    return absl::InternalError("dsv3-generate --tp " + std::to_string(tp) + " failed: " + r.err);
  }
  return ReadNpyF32(out);
}

class CudaTensorParallelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaTensorParallelTest, TwoGpusMatchOne) {
  if (CudaBackend::DeviceCount() < 2) {
    GTEST_SKIP() << "fewer than two CUDA devices: tensor-parallel GPU test skipped";
  }
  const std::string checkpoint = GetParam();
  const std::string fixture = checkpoint.substr(0, checkpoint.find('-'));
  const auto ref = ::dsv3::testing::LoadFixtureReference(fixture);
  TempDir dir;
  for (size_t p = 0; p < ref.prompts.size(); ++p) {
    auto one = PromptLogits(checkpoint, ref.prompts[p], 1, dir.file("tp1.npy"));
    ASSERT_TRUE(one.ok()) << one.status();
    auto two = PromptLogits(checkpoint, ref.prompts[p], 2, dir.file("tp2.npy"));
    ASSERT_TRUE(two.ok()) << two.status();
    ASSERT_EQ(two->shape, one->shape);
    auto hf = ReadNpyF32(FixturePath(fixture + "-ref/logits_" + std::to_string(p) + ".npy"));
    ASSERT_TRUE(hf.ok()) << hf.status();
    const double tp_err = ::dsv3::testing::RelError(two->data, one->data);
    std::printf("tp %s prompt %zu (%zu tokens): tp2-tp1 %.4f tp1-ref %.4f tp2-ref %.4f\n",
                checkpoint.c_str(), p, ref.prompts[p].size(), tp_err,
                ::dsv3::testing::RelError(one->data, hf->data),
                ::dsv3::testing::RelError(two->data, hf->data));
    EXPECT_LE(tp_err, testing::kMultiGpuLogitTol) << checkpoint << " prompt " << p;
    const int64_t vocab = one->shape[1];
    for (int64_t r = 0; r < one->shape[0]; ++r) {
      const auto [best, margin] = ::dsv3::testing::TopToken(one->data.data() + r * vocab, vocab);
      if (margin <= testing::kGreedyMargin) continue;
      const int32_t best_two = ::dsv3::testing::TopToken(two->data.data() + r * vocab, vocab).first;
      EXPECT_EQ(best_two, best) << checkpoint << " prompt " << p << " position " << r;
    }
  }
}

// Fixtures whose heads, widths, experts and vocabulary two ranks divide (ragged's 3 heads do
// not) and whose FP8 slices start on 128 boundaries (smooth's, like V3's at TP <= 16).
INSTANTIATE_TEST_SUITE_P(Fixtures, CudaTensorParallelTest,
                         ::testing::Values("smooth-fp8", "tiny-bf16", "noqlora-bf16",
                                           "smooth-bf16"),
                         ::dsv3::testing::FixtureTestName);

// tiny's and noqlora's o_proj and shared-expert slices are 64 wide at TP=2: they cut the
// 128x128 FP8 scale blocks, which the GPU refuses with a message that says what to change
// (CudaBackend::LoadLinear) rather than run another model.
class CudaTensorParallelRefusalTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaTensorParallelRefusalTest, Fp8SlicesThatCutBlocksAreRefused) {
  if (CudaBackend::DeviceCount() < 2) {
    GTEST_SKIP() << "fewer than two CUDA devices: tensor-parallel GPU test skipped";
  }
  const auto r = RunCommand(ToolPath("dsv3-generate") + " --device cuda --tp 2 --model " +
                            FixturePath(GetParam()) + " --prompt-ids 5,77 --max-new-tokens 1");
  EXPECT_FALSE(!r.signaled && r.exit_code == 0) << r.out;
  EXPECT_NE(r.err.find("cuts its 128x128 scale blocks"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tensor-parallel size"), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaTensorParallelRefusalTest,
                         ::testing::Values("tiny-fp8", "noqlora-fp8"),
                         ::dsv3::testing::FixtureTestName);

// The demo model's trained MTP module drafting on two GPUs: greedy output with 2 drafts per step
// equals the same split's output without them (as one GPU's does, gpu_cuda_speculative_test),
// for tensor parallelism and for data-parallel attention, and drafts are accepted (--stats).
TEST(CudaTensorParallelSpeculativeTest, DraftsKeepTheGreedyOutputOfTheSameSplit) {
  if (CudaBackend::DeviceCount() < 2) {
    GTEST_SKIP() << "fewer than two CUDA devices: tensor-parallel GPU test skipped";
  }
  if (!std::filesystem::exists(::dsv3::testing::DemoModelDir())) {
    GTEST_SKIP() << "demo model not extracted at " << ::dsv3::testing::DemoModelDir();
  }
  TempDir dir;
  const std::string prompts = dir.file("prompts.txt");
  {
    std::ofstream out(prompts);
    for (const auto& p : ::dsv3::testing::HeldOutWindows(4, 40)) {
      out << absl::StrJoin(p, ",") << "\n";
    }
  }
  const std::string args = " --device cuda --model " + ::dsv3::testing::DemoModelDir() +
                           " --prompts-file " + prompts +
                           " --max-new-tokens 32 --ignore-eos --stats";
  for (const char* split : {"--tp 2", "--tp 2 --dp-attention"}) {
    const auto plain = RunCommand(ToolPath("dsv3-generate") + " " + split + args);
    ASSERT_EQ(plain.exit_code, 0) << split << ": " << plain.err;
    const auto spec =
        RunCommand(ToolPath("dsv3-generate") + " " + split + args + " --speculative-tokens 2");
    ASSERT_EQ(spec.exit_code, 0) << split << ": " << spec.err;
    EXPECT_EQ(spec.out, plain.out) << split;
    // --stats prints the engine counters as the last line of stderr.
    const nlohmann::json stats =
        nlohmann::json::parse(spec.err.substr(spec.err.rfind("\n{") + 1));
    std::printf("%s K=2: accepted/proposed %s/%s\n", split, stats["spec_accepted"].dump().c_str(),
                stats["spec_proposed"].dump().c_str());
    EXPECT_GT(stats["spec_accepted"][0].get<int64_t>(), 0) << split;
  }
}

}  // namespace
}  // namespace dsv3
