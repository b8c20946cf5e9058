// MTP speculative decoding in the engine on the CPU backend: greedy output must be identical to
// K = 0, token for token (and logprob for logprob), alone and batched, under chunked prefill,
// preemption and prefix-cache hits, on every fixture (random weights, MTP tensors included) and
// on the trained demo model; stop conditions that land inside a step cut it exactly there;
// sampled output follows the K = 0 distribution; every KV block comes back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "tests/demo_model.h"
#include "tests/fixture_reference.h"
#include "tests/test_util.h"

namespace dsv3::engine_speculative_test {
namespace {

using ::dsv3::testing::FixturePath;

struct Output {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  FinishReason finish = FinishReason::kNone;
};

Output Drain(RequestStream& stream) {
  Output out;
  while (auto d = stream.Next()) {
    out.tokens.insert(out.tokens.end(), d->token_ids.begin(), d->token_ids.end());
    out.logprobs.insert(out.logprobs.end(), d->logprobs.begin(), d->logprobs.end());
    if (d->finished()) out.finish = d->finish_reason;
  }
  return out;
}

struct EngineShape {
  int64_t blocks = 256;
  int32_t block_size = 16;
  int32_t max_batched_tokens = 4096;
  int32_t max_running = 16;
};

std::unique_ptr<Engine> MakeEngine(DeepseekV3Model& model, int32_t k, const EngineShape& shape) {
  EngineConfig c;
  c.num_kv_blocks = shape.blocks;
  c.block_size = shape.block_size;
  c.scheduler.max_batched_tokens = shape.max_batched_tokens;
  c.scheduler.max_running_seqs = shape.max_running;
  c.scheduler.speculative_tokens = k;
  c.max_queued_requests = 4096;
  auto engine = Engine::Create(model, nullptr, c);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

EngineRequest Greedy(const std::vector<int32_t>& prompt, int max_tokens) {
  EngineRequest r;
  r.prompt_ids = prompt;
  r.sampling.temperature = 0;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;  // long outputs: every step verifies drafts
  r.sampling.logprobs = 1;
  r.detokenize = false;
  return r;
}

// Submits every request at once (batched), or one after the other (alone).
std::vector<Output> RunRequests(Engine& engine, const std::vector<EngineRequest>& requests, bool batched) {
  std::vector<Output> outs;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const EngineRequest& r : requests) {
    auto s = engine.Submit(r);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return outs;
    if (batched) {
      streams.push_back(*s);
    } else {
      outs.push_back(Drain(**s));
    }
  }
  for (auto& s : streams) outs.push_back(Drain(*s));
  return outs;
}

void ExpectAllBlocksReturned(const Engine& engine) {
  const EngineStats s = engine.Stats();
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
  EXPECT_EQ(s.running_sequences, 0);
}

void ExpectSame(const std::vector<Output>& want, const std::vector<Output>& got,
                const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].tokens, got[i].tokens) << what << ", request " << i;
    EXPECT_EQ(want[i].finish, got[i].finish) << what << ", request " << i;
    ASSERT_EQ(want[i].logprobs.size(), got[i].tokens.size()) << what << ", request " << i;
    for (size_t j = 0; j < want[i].logprobs.size(); ++j) {
      EXPECT_NEAR(want[i].logprobs[j], got[i].logprobs[j], 1e-3) << what << ", " << i << "/" << j;
    }
  }
}

std::vector<int32_t> SyntheticPrompt(int n, int salt, int vocab) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back((i * 37 + salt * 11) % (vocab - 10) + 5);
  return p;
}

// Greedy equality with K = 0 under the engine shapes the scheduler treats differently.
void CheckGreedyLossless(DeepseekV3Model& model, const std::vector<std::vector<int32_t>>& prompts,
                         int max_tokens, const std::vector<int32_t>& ks) {
  std::vector<EngineRequest> requests;
  for (const auto& p : prompts) requests.push_back(Greedy(p, max_tokens));
  std::vector<Output> want;
  {
    auto engine = MakeEngine(model, 0, {});
    want = RunRequests(*engine, requests, /*batched=*/false);
  }
  for (int32_t k : ks) {
    const std::string kk = "K=" + std::to_string(k);
    {
      auto engine = MakeEngine(model, k, {});
      ExpectSame(want, RunRequests(*engine, requests, false), kk + " alone");
      ExpectSame(want, RunRequests(*engine, requests, true), kk + " batched");
      // The same prompts again: prefix-cache hits (prompts longer than a block).
      ExpectSame(want, RunRequests(*engine, requests, true), kk + " prefix hits");
      EXPECT_GT(engine->Stats().prefix_cache_hits, 0) << kk;
      const EngineStats s = engine->Stats();
      ASSERT_EQ(s.spec_proposed.size(), static_cast<size_t>(k));
      EXPECT_GT(s.spec_proposed[0], 0) << kk;
      for (int32_t j = 0; j < k; ++j) EXPECT_LE(s.spec_accepted[j], s.spec_proposed[j]);
      ExpectAllBlocksReturned(*engine);
    }
    {
      // Chunked prefill: 24 tokens a step.
      auto engine = MakeEngine(model, k, {.max_batched_tokens = 24, .max_running = 4});
      ExpectSame(want, RunRequests(*engine, requests, true), kk + " chunked");
      ExpectAllBlocksReturned(*engine);
    }
    {
      // Every request at once in a pool that holds the longest one and little more: preemptions.
      size_t longest = 0;
      for (const auto& p : prompts) longest = std::max(longest, p.size() + max_tokens);
      const int64_t blocks = static_cast<int64_t>(longest + 7) / 8 + 2;
      auto engine = MakeEngine(model, k, {.blocks = blocks, .block_size = 8});
      ExpectSame(want, RunRequests(*engine, requests, true), kk + " preempted");
      EXPECT_GT(engine->Stats().preemptions, 0) << kk;
      ExpectAllBlocksReturned(*engine);
    }
  }
}

class SpeculativeFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto model = DeepseekV3Model::Load(FixturePath(GetParam()), backend_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    ASSERT_TRUE(model_->has_mtp());
  }
  std::vector<std::vector<int32_t>> Prompts() const {
    const int vocab = static_cast<int>(model_->config().vocab_size);
    std::string name = GetParam();
    auto ref = ::dsv3::testing::LoadFixtureReference(name.substr(0, name.find('-')));
    std::vector<std::vector<int32_t>> prompts = ref.prompts;
    for (int n : {3, 40, 21}) prompts.push_back(SyntheticPrompt(n, n, vocab));
    return prompts;
  }

  CpuBackend backend_{0};
  std::unique_ptr<DeepseekV3Model> model_;
};

TEST_P(SpeculativeFixtureTest, GreedyOutputIdenticalToNoSpeculation) {
  CheckGreedyLossless(*model_, Prompts(), 24, {1, 2, 3});
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SpeculativeFixtureTest,
                         ::testing::ValuesIn(::dsv3::testing::AllFixtureCheckpoints()),
                         ::dsv3::testing::FixtureTestName);

class SpeculativeDemoTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    backend_ = new CpuBackend(0);
    auto model = DeepseekV3Model::Load(::dsv3::testing::DemoModelDir(), *backend_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete backend_;
  }
  static std::vector<std::vector<int32_t>> Prompts() {
    return ::dsv3::testing::HeldOutWindows(4, 40);
  }

  static CpuBackend* backend_;
  static DeepseekV3Model* model_;
};
CpuBackend* SpeculativeDemoTest::backend_ = nullptr;
DeepseekV3Model* SpeculativeDemoTest::model_ = nullptr;

TEST_F(SpeculativeDemoTest, GreedyOutputIdenticalToNoSpeculation) {
  CheckGreedyLossless(*model_, Prompts(), 32, {1, 3});
}

TEST_F(SpeculativeDemoTest, TrainedMtpDraftsAreAcceptedOften) {
  auto engine = MakeEngine(*model_, 2, {});
  std::vector<EngineRequest> requests;
  for (const auto& p : Prompts()) requests.push_back(Greedy(p, 32));
  RunRequests(*engine, requests, true);
  const EngineStats s = engine->Stats();
  ASSERT_EQ(s.spec_proposed.size(), 2u);
  // Measured ~0.5 for the first draft; random drafts would be accepted ~never.
  EXPECT_GT(static_cast<double>(s.spec_accepted[0]) / s.spec_proposed[0], 0.3);
  EXPECT_LT(s.steps, 4 * 32);
}

// Stop conditions met by a token inside a step: the output ends exactly where K = 0 ends it.
TEST_F(SpeculativeDemoTest, StopInsideStepEndsOutputThere) {
  const std::vector<int32_t> prompt = Prompts()[0];
  Output plain;
  {
    auto engine = MakeEngine(*model_, 0, {});
    plain = RunRequests(*engine, {Greedy(prompt, 40)}, false)[0];
  }
  ASSERT_EQ(plain.tokens.size(), 40u);
  auto engine = MakeEngine(*model_, 3, {});
  for (int32_t max_tokens = 1; max_tokens <= 12; ++max_tokens) {
    const Output got = RunRequests(*engine, {Greedy(prompt, max_tokens)}, false)[0];
    EXPECT_EQ(got.finish, FinishReason::kLength);
    EXPECT_EQ(got.tokens, std::vector<int32_t>(plain.tokens.begin(),
                                               plain.tokens.begin() + max_tokens));
    EXPECT_EQ(got.logprobs.size(), got.tokens.size());
  }
  for (size_t at = 1; at < 20; ++at) {
    EngineRequest r = Greedy(prompt, 40);
    r.sampling.stop_token_ids = {plain.tokens[at]};
    // The first occurrence of that token ends the output, with it.
    size_t first = 0;
    while (plain.tokens[first] != plain.tokens[at]) ++first;
    const Output got = RunRequests(*engine, {r}, false)[0];
    EXPECT_EQ(got.finish, FinishReason::kStop);
    EXPECT_EQ(got.tokens, std::vector<int32_t>(plain.tokens.begin(),
                                               plain.tokens.begin() + first + 1))
        << "stop token at " << at;
  }
  ExpectAllBlocksReturned(*engine);
}

// Sampled output: the distribution of the first tokens verified against drafts (output tokens
// 2 and 3; token 1 comes from the prefill) must match K = 0 over many seeds.
TEST_F(SpeculativeDemoTest, SampledTokensFollowTheDistributionOfNoSpeculation) {
  const std::vector<int32_t> prompt = Prompts()[1];
  constexpr int kSeeds = 1500;
  const auto histogram = [&](int32_t k) {
    auto engine = MakeEngine(*model_, k, {.blocks = 2048, .max_running = 256});
    std::vector<EngineRequest> requests;
    for (int seed = 0; seed < kSeeds; ++seed) {
      EngineRequest r = Greedy(prompt, 3);
      r.sampling.temperature = 0.8f;
      r.sampling.top_k = 20;
      r.sampling.seed = 1000003ull * seed + 17;
      requests.push_back(r);
    }
    std::map<std::vector<int32_t>, int> counts;  // (token 2, token 3) -> count
    for (const Output& o : RunRequests(*engine, requests, true)) {
      EXPECT_EQ(o.tokens.size(), 3u);
      if (o.tokens.size() == 3) counts[{o.tokens[1], o.tokens[2]}]++;
    }
    if (k > 0) {
      EXPECT_GT(engine->Stats().spec_proposed[0], 0);
    }
    return counts;
  };
  const auto a = histogram(0), b = histogram(2);
  // Two-sample chi-square over the outcomes seen at least 10 times in all; the rest pooled.
  std::map<std::vector<int32_t>, std::pair<int, int>> cells;
  for (const auto& [key, n] : a) cells[key].first += n;
  for (const auto& [key, n] : b) cells[key].second += n;
  std::vector<std::pair<int, int>> bins;
  std::pair<int, int> rest{0, 0};
  for (const auto& [key, ab] : cells) {
    if (ab.first + ab.second >= 10) {
      bins.push_back(ab);
    } else {
      rest.first += ab.first;
      rest.second += ab.second;
    }
  }
  if (rest.first + rest.second > 0) bins.push_back(rest);
  ASSERT_GE(bins.size(), 5u) << "too peaked a distribution to test";
  double chi = 0;
  for (const auto& [x, y] : bins) {
    chi += std::pow(x - y, 2.0) / (x + y);  // equal sample sizes
  }
  // Chi-square with bins - 1 degrees of freedom at significance 0.001 (Wilson-Hilferty).
  const double df = static_cast<double>(bins.size() - 1);
  const double z = 3.090;
  const double critical = df * std::pow(1 - 2 / (9 * df) + z * std::sqrt(2 / (9 * df)), 3);
  EXPECT_LT(chi, critical) << bins.size() << " bins";
}

}  // namespace
}  // namespace dsv3::engine_speculative_test
