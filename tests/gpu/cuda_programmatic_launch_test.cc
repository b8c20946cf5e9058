// Programmatic dependent launch (kernels/launch.cuh; CudaBackend::Options::programmatic_launch)
// changes when kernels start, never what they compute: the same prefill and decode steps give
// bit-identical logits with it off and on, eager and replayed from whole-step graphs. A kernel
// that read its input or wrote its output before KernelPrologue() would race the kernel before
// it and show here as differing logits. The prefills are short enough to take PDL too.
// Two models: a fixture (the GEMM decode attention path) and a random one at V3's latent dims
// (the flash decode kernel with its keys cut into parts and the combine).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>

#include "engine/model/model.h"
#include "engine/model/step_graphs.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::FixturePath;

constexpr int32_t kBlock = 16;
constexpr int kDecodeSteps = 12;

using MakeModel = std::function<absl::StatusOr<std::unique_ptr<DeepseekV3Model>>(Backend& backend)>;

// A prefill of prompts of `lengths`, then kDecodeSteps decode steps of every sequence, on a
// fresh cache; every token is PromptToken's (not the logits'), so every run sees the same
// inputs. Decode steps go through a DecodeGraphRunner when `graphed`. Returns every step's
// logits, one after the other.
std::vector<float> RunSteps(DeepseekV3Model& model, Backend& backend, bool graphed,
                            const std::vector<int32_t>& lengths, int32_t seq_blocks) {
  const ModelConfig& c = model.config();
  const int num_seqs = static_cast<int>(lengths.size());
  KvCache cache(backend, c, num_seqs * seq_blocks, kBlock);
  auto table = [&](int s) {
    std::vector<int32_t> t(seq_blocks);
    for (int32_t i = 0; i < seq_blocks; ++i) t[i] = i * num_seqs + s;
    return t;
  };
  std::vector<float> all, logits;
  EXPECT_TRUE(
      model.Forward(::dsv3::testing::PromptsPrefill(lengths, table, c.vocab_size), cache, logits)
          .ok());
  all.insert(all.end(), logits.begin(), logits.end());
  DecodeGraphRunner runner(model);
  for (int step = 0; step < kDecodeSteps; ++step) {
    ForwardBatch decode;
    for (int s = 0; s < num_seqs; ++s) {
      const int32_t context = lengths[s] + step;
      decode.token_ids.push_back(::dsv3::testing::PromptToken(s, context, c.vocab_size));
      decode.sequences.push_back({s, 1, context, table(s)});
      decode.logits_rows.push_back(s);
    }
    const absl::Status st =
        graphed ? runner.Forward(decode, cache, logits) : model.Forward(decode, cache, logits);
    EXPECT_TRUE(st.ok()) << st;
    all.insert(all.end(), logits.begin(), logits.end());
  }
  if (graphed) {
    EXPECT_GT(runner.stats().replayed, 0) << "no step was replayed from a graph";
  }
  return all;
}

// Elements that differ, and the largest difference; 0 of them is the pass.
void ExpectIdentical(const std::vector<float>& got, const std::vector<float>& want,
                     const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int64_t differing = 0;
  double largest = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] == want[i]) continue;
    ++differing;
    largest = std::max(largest, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  std::printf("pdl %s: %lld of %zu logits differ (largest by %.3g)\n", what,
              static_cast<long long>(differing), want.size(), largest);
  EXPECT_EQ(differing, 0) << what << ": largest difference " << largest;
}

// Four backends, each with its own copy of the model: {PDL off, on} x {eager, graphed}.
void ExpectSameLogitsWithAndWithout(const MakeModel& make, const std::vector<int32_t>& lengths,
                                    int32_t seq_blocks) {
  std::vector<float> runs[2][2];  // [pdl][graphed]
  for (const bool pdl : {false, true}) {
    for (const bool graphed : {false, true}) {
      auto backend = CudaBackend::Create({.cuda_graphs = graphed, .programmatic_launch = pdl});
      ASSERT_TRUE(backend.ok()) << backend.status();
      auto model = make(**backend);
      ASSERT_TRUE(model.ok()) << model.status();
      runs[pdl][graphed] = RunSteps(**model, **backend, graphed, lengths, seq_blocks);
      model->reset();  // its tensors live in the backend's memory: freed first
    }
  }
  ExpectIdentical(runs[1][0], runs[0][0], "eager steps");
  ExpectIdentical(runs[1][1], runs[0][1], "graphed steps");
}

TEST(CudaProgrammaticLaunchTest, FixtureGivesTheSameLogitsWithAndWithout) {
  DSV3_SKIP_WITHOUT_GPU();
  ExpectSameLogitsWithAndWithout(
      [](Backend& backend) { return DeepseekV3Model::Load(FixturePath("tiny-fp8"), backend); },
      {5, 13, 30, 9, 21}, 8);
}

TEST(CudaProgrammaticLaunchTest, V3LatentDimsGiveTheSameLogitsWithAndWithout) {
  DSV3_SKIP_WITHOUT_GPU();
  auto config = ::dsv3::testing::V3LatentDimsConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  // 700 cached tokens: long enough for the flash decode kernel to split the keys.
  ExpectSameLogitsWithAndWithout(
      [&](Backend& backend) { return DeepseekV3Model::Random(*config, backend, 7); },
      {5, 13, 300, 9, 700}, 48);
}

}  // namespace
}  // namespace dsv3
