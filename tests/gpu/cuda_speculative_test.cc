// MTP speculative decoding on the GPU (docs/cuda.md, "CUDA graphs for decode"):
// - verify steps (K + 1 new tokens per sequence) and MTP draft steps (one token per sequence)
//   replay as CUDA graphs, and their logits equal those of a backend without graphs;
// - a verify step computes each token as a decode step of that token would (absorbed attention
//   over the token's own prefix): its logits against K + 1 single-token steps;
// - greedy output through the engine with --speculative-tokens 1 and 2 equals K = 0 on the
//   trained demo model (tests/demo_model.h), one request at a time.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/model/step_graphs.h"
#include "tests/demo_model.h"
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
constexpr int kSeqs = 3;
const std::vector<int32_t> kPromptLengths = {5, 13, 30};

std::vector<int32_t> Table(int s) {
  std::vector<int32_t> t(kBlocksPerSeq);
  for (int32_t i = 0; i < kBlocksPerSeq; ++i) t[i] = i * kSeqs + s;  // interleaved blocks
  return t;
}

// The three prompts in one prefill step, every row's logits and final hidden state requested.
ForwardBatch Prefill(int64_t vocab) {
  ForwardBatch b;
  for (int s = 0; s < kSeqs; ++s) {
    const int32_t begin = static_cast<int32_t>(b.token_ids.size());
    for (int32_t i = 0; i < kPromptLengths[s]; ++i) {
      b.token_ids.push_back(static_cast<int32_t>((17 + 31 * s + 7 * i) % vocab));
      b.logits_rows.push_back(begin + i);
      b.hidden_rows.push_back(begin + i);
    }
    b.sequences.push_back({begin, kPromptLengths[s], 0, Table(s)});
  }
  return b;
}

// The fixture must carry an MTP module (the draft steps run it).
class CudaSpeculativeTest : public ::dsv3::testing::EagerGraphedModelsTest {
 protected:
  void SetUp() override {
    EagerGraphedModelsTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(graphed_model_->has_mtp()) << GetParam() << " has no MTP module";
  }
};

// Verify steps of 2 then 3 tokens per sequence, then chained MTP drafts, on both backends with
// the eager backend's tokens (teacher-forced).
TEST_P(CudaSpeculativeTest, VerifyAndDraftStepsReplayAsGraphsAndMatchEager) {
  const ModelConfig& c = graphed_model_->config();
  const int64_t vocab = c.vocab_size, h = c.hidden_size;
  KvCache graphed_cache(*gpu_, c, kSeqs * kBlocksPerSeq, kBlock, /*mtp_layer=*/true);
  KvCache eager_cache(*eager_, c, kSeqs * kBlocksPerSeq, kBlock, /*mtp_layer=*/true);
  std::vector<float> graphed_logits, eager_logits, graphed_hidden, eager_hidden;
  const ForwardBatch prefill = Prefill(vocab);
  ASSERT_TRUE(graphed_model_->Forward(prefill, graphed_cache, graphed_logits).ok());
  ASSERT_TRUE(
      eager_model_->Forward(prefill, eager_cache, eager_logits, MlaMode::kAuto, &eager_hidden).ok());
  std::vector<int32_t> context = kPromptLengths, next(kSeqs);
  for (int s = 0; s < kSeqs; ++s) {
    const int32_t last = prefill.sequences[s].token_begin + kPromptLengths[s] - 1;
    next[s] = TopToken(&eager_logits[last * vocab], vocab).first;
  }

  // MTP over every prompt position (position i with token i + 1: what the engine's Extend
  // runs), eager on both (sequences of different lengths), filling the MTP layer's cache.
  ForwardBatch extend;
  for (int s = 0; s < kSeqs; ++s) {
    const SequenceSlice& p = prefill.sequences[s];
    extend.sequences.push_back({p.token_begin, p.num_tokens, 0, Table(s)});
    for (int32_t i = 1; i < p.num_tokens; ++i) {
      extend.token_ids.push_back(prefill.token_ids[p.token_begin + i]);
    }
    extend.token_ids.push_back(next[s]);
    extend.logits_rows.push_back(p.token_begin + p.num_tokens - 1);
  }
  std::vector<float> eager_mtp_hidden;
  ASSERT_TRUE(graphed_model_->ForwardMtp(extend, eager_hidden, graphed_cache, graphed_logits).ok());
  ASSERT_TRUE(eager_model_->ForwardMtp(extend, eager_hidden, eager_cache, eager_logits,
                                       &eager_mtp_hidden).ok());
  EXPECT_LT(RelError(graphed_logits, eager_logits), kTol);

  // Chained drafts: MTP at position context + j - 1 of each sequence, fed the previous draft
  // and the MTP output state (eager: the MTP module is not graphed).
  std::vector<int32_t> draft(kSeqs);
  for (int s = 0; s < kSeqs; ++s) draft[s] = TopToken(&eager_logits[s * vocab], vocab).first;
  double worst_draft = 0;
  const int draft_steps = 6;
  for (int j = 1; j <= draft_steps; ++j) {
    ForwardBatch d;
    for (int s = 0; s < kSeqs; ++s) {
      d.sequences.push_back({s, 1, context[s] + j - 1, Table(s)});
      d.token_ids.push_back(draft[s]);
      d.logits_rows.push_back(s);
    }
    const std::vector<float> h_prev = eager_mtp_hidden;
    ASSERT_TRUE(graphed_model_->ForwardMtp(d, h_prev, graphed_cache, graphed_logits).ok());
    ASSERT_TRUE(eager_model_->ForwardMtp(d, h_prev, eager_cache, eager_logits, &eager_mtp_hidden).ok());
    ASSERT_EQ(eager_mtp_hidden.size(), static_cast<size_t>(kSeqs * h));
    const double err = RelError(graphed_logits, eager_logits);
    worst_draft = std::max(worst_draft, err);
    EXPECT_LT(err, kTol) << "draft step " << j;
    for (int s = 0; s < kSeqs; ++s) draft[s] = TopToken(&eager_logits[s * vocab], vocab).first;
  }
  DecodeGraphRunner runner(*graphed_model_);

  // Verify steps: [next, K drafts] per sequence, 6 steps at K = 1, then 6 at K = 2, each as if
  // every draft were accepted (contexts grow by K + 1, crossing block boundaries).
  double worst_verify = 0;
  const int verify_steps = 12;
  for (int step = 0; step < verify_steps; ++step) {
    const int32_t tokens = step < verify_steps / 2 ? 2 : 3;
    ForwardBatch v;
    for (int s = 0; s < kSeqs; ++s) {
      const int32_t begin = static_cast<int32_t>(v.token_ids.size());
      v.sequences.push_back({begin, tokens, context[s], Table(s)});
      v.token_ids.push_back(next[s]);
      for (int32_t i = 1; i < tokens; ++i) {
        v.token_ids.push_back(static_cast<int32_t>((next[s] * 31 + i * 7 + s) % vocab));
      }
      for (int32_t i = 0; i < tokens; ++i) v.logits_rows.push_back(begin + i);
    }
    ASSERT_TRUE(runner.Forward(v, graphed_cache, graphed_logits).ok());
    ASSERT_TRUE(eager_model_->Forward(v, eager_cache, eager_logits).ok());
    const double err = RelError(graphed_logits, eager_logits);
    worst_verify = std::max(worst_verify, err);
    EXPECT_LT(err, kTol) << "verify step " << step;
    for (int s = 0; s < kSeqs; ++s) {
      const int64_t last = v.sequences[s].token_begin + tokens - 1;
      next[s] = TopToken(&eager_logits[last * vocab], vocab).first;
      context[s] += tokens;
    }
  }
  const DecodeGraphRunner::Stats stats = runner.stats();
  std::printf("speculative graphs %s: worst relative error verify %.2e, draft %.2e; verify "
              "%lld captures, %lld replays\n",
              GetParam().c_str(), worst_verify, worst_draft,
              static_cast<long long>(stats.captured), static_cast<long long>(stats.replayed));
  // Two verify shapes (2 and 3 tokens per sequence): each captured once and replayed after a
  // measured run and the capture (one more measured run allowed, as in gpu_cuda_graphs_test).
  EXPECT_EQ(stats.captured, 2);
  EXPECT_GE(stats.replayed, verify_steps - 6);
}

// A verify step of 3 tokens per sequence against the same tokens fed one step at a time (both
// eager): each token's logits come from the same absorbed attention over its own prefix.
TEST_P(CudaSpeculativeTest, VerifyStepMatchesSingleTokenSteps) {
  const ModelConfig& c = eager_model_->config();
  const int64_t vocab = c.vocab_size;
  KvCache verify_cache(*eager_, c, kSeqs * kBlocksPerSeq, kBlock);
  KvCache single_cache(*eager_, c, kSeqs * kBlocksPerSeq, kBlock);
  std::vector<float> logits, single;
  const ForwardBatch prefill = Prefill(vocab);
  ASSERT_TRUE(eager_model_->Forward(prefill, verify_cache, logits).ok());
  ASSERT_TRUE(eager_model_->Forward(prefill, single_cache, logits).ok());
  const int32_t tokens = 3;
  ForwardBatch v;
  for (int s = 0; s < kSeqs; ++s) {
    v.sequences.push_back({s * tokens, tokens, kPromptLengths[s], Table(s)});
    for (int32_t i = 0; i < tokens; ++i) {
      v.token_ids.push_back(static_cast<int32_t>((101 + 13 * s + 29 * i) % vocab));
      v.logits_rows.push_back(s * tokens + i);
    }
  }
  ASSERT_TRUE(eager_model_->Forward(v, verify_cache, logits).ok());
  double worst = 0;
  int same_argmax = 0;
  for (int32_t i = 0; i < tokens; ++i) {
    ForwardBatch d;
    for (int s = 0; s < kSeqs; ++s) {
      d.sequences.push_back({s, 1, kPromptLengths[s] + i, Table(s)});
      d.token_ids.push_back(v.token_ids[s * tokens + i]);
      d.logits_rows.push_back(s);
    }
    ASSERT_TRUE(eager_model_->Forward(d, single_cache, single).ok());
    for (int s = 0; s < kSeqs; ++s) {
      const std::vector<float> want(single.begin() + s * vocab, single.begin() + (s + 1) * vocab);
      const std::vector<float> got(logits.begin() + (s * tokens + i) * vocab,
                                   logits.begin() + (s * tokens + i + 1) * vocab);
      const double err = RelError(got, want);
      worst = std::max(worst, err);
      EXPECT_LT(err, kTol) << "sequence " << s << " token " << i;
      same_argmax += TopToken(got.data(), vocab).first == TopToken(want.data(), vocab).first;
    }
  }
  std::printf("verify vs single-token steps %s: worst relative error %.2e, same argmax %d/%d\n",
              GetParam().c_str(), worst, same_argmax, kSeqs * tokens);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaSpeculativeTest,
                         ::testing::Values("smooth-fp8", "tiny-fp8"));

// Greedy through the engine on the GPU: --speculative-tokens 1 and 2 give K = 0's tokens.
class CudaSpeculativeDemoTest : public ::dsv3::testing::GpuTest {};

TEST_F(CudaSpeculativeDemoTest, GreedyWithDraftsEqualsPlainOnTheDemoModel) {
  if (!std::filesystem::exists(::dsv3::testing::DemoModelDir())) {
    GTEST_SKIP() << "demo model not extracted at " << ::dsv3::testing::DemoModelDir();
  }
  auto model = DeepseekV3Model::Load(::dsv3::testing::DemoModelDir(), *gpu_);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto prompts = ::dsv3::testing::HeldOutWindows(8, 48);
  const int max_tokens = 48;
  auto run = [&](int32_t k, EngineStats& stats) {
    EngineConfig c;
    c.num_kv_blocks = 256;
    c.block_size = 16;
    c.scheduler.max_batched_tokens = 4096;
    c.scheduler.speculative_tokens = k;
    auto engine = Engine::Create(**model, nullptr, c);
    EXPECT_TRUE(engine.ok()) << engine.status();
    std::vector<std::vector<int32_t>> outputs;
    if (!engine.ok()) return outputs;
    for (const auto& prompt : prompts) {  // one at a time: the steps of a lone sequence
      EngineRequest r;
      r.prompt_ids = prompt;
      r.sampling.temperature = 0;
      r.sampling.max_tokens = max_tokens;
      r.sampling.ignore_eos = true;
      r.detokenize = false;
      auto stream = (*engine)->Submit(r);
      EXPECT_TRUE(stream.ok()) << stream.status();
      if (!stream.ok()) break;
      std::vector<int32_t>& got = outputs.emplace_back();
      while (auto d = (*stream)->Next()) got.insert(got.end(), d->token_ids.begin(), d->token_ids.end());
    }
    stats = (*engine)->Stats();
    return outputs;
  };
  EngineStats stats;
  const auto want = run(0, stats);
  ASSERT_EQ(want.size(), prompts.size());
  for (int32_t k : {1, 2}) {
    const auto got = run(k, stats);
    ASSERT_EQ(got.size(), want.size());
    int equal = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i], want[i]) << "K=" << k << ", prompt " << i;
      equal += got[i] == want[i];
    }
    ASSERT_EQ(stats.spec_proposed.size(), static_cast<size_t>(k));
    std::printf("demo model K=%d: %d/%zu outputs equal K=0; accepted/proposed", k, equal,
                want.size());
    for (int32_t j = 0; j < k; ++j) {
      std::printf(" %lld/%lld", static_cast<long long>(stats.spec_accepted[j]),
                  static_cast<long long>(stats.spec_proposed[j]));
    }
    std::printf("\n");
    EXPECT_GT(stats.spec_proposed[0], 0);
  }
}

}  // namespace
}  // namespace dsv3
