// Whole-step CUDA graphs (engine/model/step_graphs.h, engine/backend/cuda/cuda_step_graphs.cc):
// the same teacher-forced decode on two GPU backends, one through the decode graph runner
// (padded to the graph batch sizes, replaying captured steps) and one running every op eagerly.
// Replays must read each step's new plan (positions, slots, block tables that grow across block
// boundaries) at the addresses they were captured with; batches of 3 and 5 sequences (padded to
// 4 and 8) and 2 get graphs of their own padded size. Differences come only from decode
// attention padding to the context bucket and from more rows in the linears, so the tolerance
// is well under the fixtures' FP8 noise; padding rows must not touch the real sequences' KV
// (every step after depends on it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <numeric>

#include "engine/model/model.h"
#include "engine/model/step_graphs.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RelError;
using ::dsv3::testing::TopToken;

constexpr double kTol = 1e-2;
constexpr int32_t kBlock = 16;
constexpr int32_t kBlocksPerSeq = 8;  // 128 positions per sequence

using CudaGraphsTest = ::dsv3::testing::EagerGraphedModelsTest;

// One prefill step on both models of prompts of `lengths` (PromptsPrefill); `context` and
// `next` get each sequence's context and the eager model's greedy next token.
void PrefillBoth(DeepseekV3Model& graphed, KvCache& graphed_cache, DeepseekV3Model& eager,
                 KvCache& eager_cache, const std::vector<int32_t>& lengths,
                 const std::function<std::vector<int32_t>(int)>& table,
                 std::vector<int32_t>& context, std::vector<int32_t>& next) {
  const int64_t vocab = eager.config().vocab_size;
  const int num_seqs = static_cast<int>(lengths.size());
  context = lengths;
  next.assign(num_seqs, 0);
  const ForwardBatch prefill = ::dsv3::testing::PromptsPrefill(lengths, table, vocab);
  std::vector<float> graphed_logits, eager_logits;
  ASSERT_TRUE(graphed.Forward(prefill, graphed_cache, graphed_logits).ok());
  ASSERT_TRUE(eager.Forward(prefill, eager_cache, eager_logits).ok());
  for (int s = 0; s < num_seqs; ++s) next[s] = TopToken(&eager_logits[s * vocab], vocab).first;
}

TEST_P(CudaGraphsTest, TeacherForcedDecodeMatchesEager) {
  const ModelConfig& c = graphed_model_->config();
  const int64_t vocab = c.vocab_size;
  const int num_seqs = 5;
  KvCache graphed_cache(*gpu_, c, num_seqs * kBlocksPerSeq, kBlock);
  KvCache eager_cache(*eager_, c, num_seqs * kBlocksPerSeq, kBlock);
  auto table = [](int s) {
    std::vector<int32_t> t(kBlocksPerSeq);
    // Interleaved blocks, so that a sequence's blocks are not contiguous in the cache.
    for (int32_t i = 0; i < kBlocksPerSeq; ++i) t[i] = i * num_seqs + s;
    return t;
  };

  // Prefill five prompts of different lengths in one step.
  std::vector<int32_t> context, next;
  PrefillBoth(*graphed_model_, graphed_cache, *eager_model_, eager_cache, {5, 13, 30, 9, 21},
              table, context, next);
  ASSERT_FALSE(HasFatalFailure());
  std::vector<float> graphed_logits, eager_logits;

  // 12 decode steps of all five sequences (padded to 8; contexts cross block boundaries), 12 of
  // the last three (padded to 4), then 12 of the last two. Both models get the eager model's
  // greedy tokens.
  DecodeGraphRunner runner(*graphed_model_);
  double worst = 0;
  int compared = 0, decisive = 0;
  for (int step = 0; step < 36; ++step) {
    const int first = step < 12 ? 0 : step < 24 ? 2 : 3;
    ForwardBatch decode;
    for (int s = first; s < num_seqs; ++s) {
      const int32_t row = static_cast<int32_t>(decode.token_ids.size());
      decode.token_ids.push_back(next[s]);
      decode.sequences.push_back({row, 1, context[s], table(s)});
      decode.logits_rows.push_back(row);
    }
    ASSERT_TRUE(runner.Forward(decode, graphed_cache, graphed_logits).ok());
    ASSERT_TRUE(eager_model_->Forward(decode, eager_cache, eager_logits).ok());
    const double err = RelError(graphed_logits, eager_logits);
    worst = std::max(worst, err);
    EXPECT_LT(err, kTol) << "step " << step;
    for (int s = first; s < num_seqs; ++s) {
      const int64_t r = s - first;
      const auto [want, margin] = TopToken(&eager_logits[r * vocab], vocab);
      const int32_t got = TopToken(&graphed_logits[r * vocab], vocab).first;
      ++compared;
      if (margin > testing::kGreedyMargin) {
        ++decisive;
        EXPECT_EQ(got, want) << "step " << step << " sequence " << s;
      }
      next[s] = want;
      ++context[s];
    }
  }
  const DecodeGraphRunner::Stats stats = runner.stats();
  std::printf("graphs %s: worst relative error %.2e over 36 steps, %d/%d decisive tokens; "
              "%lld captures, %lld replays, %lld measured, %.1f MB of graph memory\n",
              GetParam().c_str(), worst, decisive, compared,
              static_cast<long long>(stats.captured), static_cast<long long>(stats.replayed),
              static_cast<long long>(stats.measured), stats.memory_bytes / 1e6);
  // Three shapes (8, 4 and 2 sequences; one context bucket): each captured once, after one
  // measured run (one more allowed, for caches the first run fills), then replayed.
  EXPECT_EQ(stats.captured, 3);
  EXPECT_LE(stats.measured, 6);
  EXPECT_GE(stats.replayed, 36 - 3 * 3);
  EXPECT_EQ(eager_->step_graphs(), nullptr);
}

// FP8 experts only: BF16 experts take the per-expert MoE path, which waits on the host and so
// stays eager.
INSTANTIATE_TEST_SUITE_P(Fixtures, CudaGraphsTest,
                         ::testing::Values("smooth-fp8", "tiny-fp8", "noqlora-fp8"));

// A random model at V3's latent dims (kv_lora_rank 512, rope 64), where decode attention is the
// flash kernel: the runner graphs batches of any mix of contexts (each item reads its own keys,
// its splits sized by the padded bucket), so five sequences of 5 to 700 cached tokens, far too
// uneven for decode by GEMMs, are graphed, and every replay matches the eager step (the eager
// backend with the default options, the graphed one with `graphed_options`).
void UnevenContextsGraphedMatchEager(const CudaBackend::Options& graphed_options,
                                     const char* what) {
  auto config = ::dsv3::testing::V3LatentDimsConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  auto graphed_backend = CudaBackend::Create(graphed_options);
  auto eager_backend = CudaBackend::Create({.cuda_graphs = false});
  ASSERT_TRUE(graphed_backend.ok() && eager_backend.ok());
  auto graphed = DeepseekV3Model::Random(*config, **graphed_backend, 7);
  auto eager = DeepseekV3Model::Random(*config, **eager_backend, 7);
  ASSERT_TRUE(graphed.ok() && eager.ok()) << graphed.status() << eager.status();
  const int64_t vocab = config->vocab_size;
  const std::vector<int32_t> lengths = {5, 13, 300, 9, 700};
  const int num_seqs = static_cast<int>(lengths.size());
  constexpr int32_t kSeqBlocks = 48;  // 768 positions per sequence
  KvCache graphed_cache(**graphed_backend, *config, num_seqs * kSeqBlocks, kBlock);
  KvCache eager_cache(**eager_backend, *config, num_seqs * kSeqBlocks, kBlock);
  auto table = [num_seqs](int s) {
    std::vector<int32_t> t(kSeqBlocks);
    for (int32_t i = 0; i < kSeqBlocks; ++i) t[i] = i * num_seqs + s;
    return t;
  };
  std::vector<int32_t> context, next;
  PrefillBoth(**graphed, graphed_cache, **eager, eager_cache, lengths, table, context, next);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  std::vector<float> graphed_logits, eager_logits;

  DecodeGraphRunner runner(**graphed);
  double worst = 0;
  for (int step = 0; step < 12; ++step) {
    ForwardBatch decode;
    for (int s = 0; s < num_seqs; ++s) {
      decode.token_ids.push_back(next[s]);
      decode.sequences.push_back({s, 1, context[s], table(s)});
      decode.logits_rows.push_back(s);
    }
    ASSERT_TRUE(runner.Forward(decode, graphed_cache, graphed_logits).ok());
    ASSERT_TRUE((*eager)->Forward(decode, eager_cache, eager_logits).ok());
    const double err = RelError(graphed_logits, eager_logits);
    worst = std::max(worst, err);
    EXPECT_LT(err, kTol) << "step " << step;
    for (int s = 0; s < num_seqs; ++s) {
      next[s] = TopToken(&eager_logits[s * vocab], vocab).first;
      ++context[s];
    }
  }
  const DecodeGraphRunner::Stats stats = runner.stats();
  std::printf("graphs at V3 latent dims, uneven contexts, %s: worst relative error %.2e over "
              "12 steps; %lld captures, %lld replays, %lld eager\n",
              what, worst, static_cast<long long>(stats.captured),
              static_cast<long long>(stats.replayed), static_cast<long long>(stats.eager));
  EXPECT_EQ(stats.eager, 0) << "uneven contexts must not keep a step eager at these dims";
  EXPECT_EQ(stats.captured, 1);
  EXPECT_GE(stats.replayed, 12 - 3);
  graphed->reset();  // the models' tensors live in their backends' memory: freed first
  eager->reset();
}

TEST(CudaGraphsAtV3LatentDimsTest, UnevenContextsAreGraphedAndMatchEager) {
  DSV3_SKIP_WITHOUT_GPU();
  UnevenContextsGraphedMatchEager({}, "default options");
}

// The same with MLA's query and inputs in three kernels in the graphed steps (RmsNormLinear, then
// PrepareMlaInputs): their replays match the eager steps of the default two (the latents beside
// q_a's norm, q_pe's RoPE in q_b's GEMM).
TEST(CudaGraphsAtV3LatentDimsTest, MlaQueryInThreeKernelsIsGraphedAndMatchesEager) {
  DSV3_SKIP_WITHOUT_GPU();
  CudaBackend::Options options;
  options.fuse_mla_query = false;
  UnevenContextsGraphedMatchEager(options, "MLA query in three kernels");
}

}  // namespace
}  // namespace dsv3
