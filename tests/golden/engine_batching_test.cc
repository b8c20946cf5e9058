// The engine with its scheduler on the CPU backend: continuous batching, chunked prefill,
// preemption and prefix caching must never change a request's tokens, and every KV block must
// come back when requests end.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "tests/fixture_reference.h"
#include "tests/test_util.h"

namespace dsv3::engine_batching_test {
namespace {

using ::dsv3::testing::FixturePath;

using Reference = ::dsv3::testing::FixtureReference;

struct Output {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  FinishReason finish = FinishReason::kNone;
  int32_t cached_tokens = 0;
};

Output Drain(RequestStream& stream) {
  Output out;
  while (auto d = stream.Next()) {
    out.tokens.insert(out.tokens.end(), d->token_ids.begin(), d->token_ids.end());
    out.logprobs.insert(out.logprobs.end(), d->logprobs.begin(), d->logprobs.end());
    if (d->finished()) {
      out.finish = d->finish_reason;
      out.cached_tokens = d->cached_tokens;
    }
  }
  return out;
}

class EngineBatchingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = DeepseekV3Model::Load(FixturePath("ragged-fp8"), backend_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    ref_ = ::dsv3::testing::LoadFixtureReference("ragged");
  }

  std::unique_ptr<Engine> MakeEngine(int64_t blocks, int32_t block_size, int32_t max_tokens_per_step,
                                     int32_t max_running = 16) {
    EngineConfig c;
    c.num_kv_blocks = blocks;
    c.block_size = block_size;
    c.scheduler.max_batched_tokens = max_tokens_per_step;
    c.scheduler.max_running_seqs = max_running;
    auto engine = Engine::Create(*model_, nullptr, c);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }

  static EngineRequest Greedy(const std::vector<int32_t>& prompt, int max_tokens) {
    EngineRequest r;
    r.prompt_ids = prompt;
    r.sampling.temperature = 0;
    r.sampling.max_tokens = max_tokens;
    r.sampling.logprobs = 1;
    r.detokenize = false;
    return r;
  }

  // Every prompt of the fixture plus extra mixed-length ones (at least 8 in all).
  std::vector<std::vector<int32_t>> ManyPrompts() const {
    std::vector<std::vector<int32_t>> prompts = ref_.prompts;
    for (int n : {3, 40, 90, 7}) {
      std::vector<int32_t> p;
      for (int i = 0; i < n; ++i) p.push_back((i * 37 + n * 11) % 480 + 5);
      prompts.push_back(p);
    }
    return prompts;
  }

  std::vector<Output> RunAll(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                             int max_tokens) {
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (const auto& p : prompts) {
      auto s = engine.Submit(Greedy(p, max_tokens));
      EXPECT_TRUE(s.ok()) << s.status();
      streams.push_back(*s);
    }
    std::vector<Output> outs;
    for (auto& s : streams) outs.push_back(Drain(*s));
    return outs;
  }

  static void ExpectAllBlocksReturned(const Engine& engine) {
    // Stats are published after each step; the last step ends every request.
    const EngineStats s = engine.Stats();
    EXPECT_EQ(s.kv_blocks_used, 0);
    EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
    EXPECT_EQ(s.running_sequences, 0);
  }

  CpuBackend backend_{0};
  std::unique_ptr<DeepseekV3Model> model_;
  Reference ref_;
};

TEST_F(EngineBatchingTest, GreedyOutputsEqualTransformersAloneAndBatched) {
  const auto prompts = ManyPrompts();
  ASSERT_GE(prompts.size(), 8u);
  std::vector<Output> alone;
  {
    auto engine = MakeEngine(256, 16, 4096);
    for (const auto& p : prompts) alone.push_back(RunAll(*engine, {p}, ref_.max_new_tokens)[0]);
    ExpectAllBlocksReturned(*engine);
  }
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    EXPECT_EQ(alone[i].tokens, ref_.continuations[i]) << "prompt " << i;
  }
  // Chunked prefill: at most 48 new tokens per step, so long prompts span several steps while
  // others decode.
  auto engine = MakeEngine(256, 16, 48);
  const auto batched = RunAll(*engine, prompts, ref_.max_new_tokens);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(batched[i].tokens, alone[i].tokens) << "prompt " << i;
  }
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineBatchingTest, PreemptionKeepsOutputsIdentical) {
  const auto prompts = ManyPrompts();
  auto roomy = MakeEngine(256, 16, 4096);
  const auto want = RunAll(*roomy, prompts, ref_.max_new_tokens);
  // 32 blocks of 16 tokens: the longest prompt (333 + 16 tokens) needs 22 of them alone, so the
  // batch cannot all fit and the scheduler must preempt.
  auto tight = MakeEngine(32, 16, 128);
  const auto got = RunAll(*tight, prompts, ref_.max_new_tokens);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "prompt " << i;
  }
  EXPECT_GT(tight->Stats().preemptions, 0);
  ExpectAllBlocksReturned(*tight);
}

TEST_F(EngineBatchingTest, PrefixHitGivesTheSameLogitsAsAMiss) {
  auto engine = MakeEngine(128, 16, 4096);
  const auto& prompt = ref_.prompts[4];  // 130 tokens: 8 full blocks
  const Output miss = RunAll(*engine, {prompt}, 8)[0];
  const Output hit = RunAll(*engine, {prompt}, 8)[0];
  EXPECT_EQ(miss.cached_tokens, 0);
  EXPECT_EQ(hit.cached_tokens, 128);
  EXPECT_EQ(hit.tokens, miss.tokens);
  ASSERT_EQ(hit.logprobs.size(), miss.logprobs.size());
  for (size_t i = 0; i < hit.logprobs.size(); ++i) {
    EXPECT_NEAR(hit.logprobs[i], miss.logprobs[i], 1e-5) << "token " << i;
  }
  EXPECT_GT(engine->Stats().prefix_cache_hits, 0);
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineBatchingTest, SameSeedSameTokensWhateverTheBatch) {
  EngineRequest sampled = Greedy(ref_.prompts[2], 12);
  sampled.sampling.temperature = 1.0f;
  sampled.sampling.top_p = 0.9f;
  sampled.sampling.seed = 1234;
  auto engine = MakeEngine(256, 16, 64);
  auto alone = engine->Submit(sampled);
  ASSERT_TRUE(alone.ok());
  const Output a = Drain(**alone);

  std::vector<std::shared_ptr<RequestStream>> others;
  for (const auto& p : ManyPrompts()) {
    EngineRequest other = Greedy(p, 10);
    other.sampling.temperature = 0.8f;
    others.push_back(*engine->Submit(other));
  }
  auto batched = engine->Submit(sampled);
  ASSERT_TRUE(batched.ok());
  const Output b = Drain(**batched);
  for (auto& s : others) Drain(*s);
  EXPECT_EQ(b.tokens, a.tokens);
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineBatchingTest, AbortAtAnyPointReturnsEveryBlock) {
  auto engine = MakeEngine(64, 16, 32);
  // Long prompts with a small step budget: some are aborted mid-prefill, some mid-decode, some
  // while waiting.
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 6; ++i) streams.push_back(*engine->Submit(Greedy(ref_.prompts[i], 16)));
  engine->Abort(streams[5]->id());  // likely still waiting
  auto first = streams[0]->Next();  // the 1-token prompt decodes at once
  ASSERT_TRUE(first.has_value());
  for (auto& s : streams) engine->Abort(s->id());
  int aborted = 0;
  for (auto& s : streams) aborted += Drain(*s).finish == FinishReason::kAbort;
  EXPECT_GE(aborted, 4);
  // Every stream ended; the engine thread publishes stats after the step that ended them.
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineBatchingTest, InvalidRequestsAreRejectedByName) {
  auto engine = MakeEngine(64, 16, 64);
  struct Case {
    std::string name;
    std::function<void(EngineRequest&)> mutate;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"temperature", [](EngineRequest& r) { r.sampling.temperature = -1; }, "temperature"},
      {"top_p", [](EngineRequest& r) { r.sampling.top_p = 0; }, "top_p"},
      {"top_k", [](EngineRequest& r) { r.sampling.top_k = -5; }, "top_k"},
      {"min_p", [](EngineRequest& r) { r.sampling.min_p = 2; }, "min_p"},
      {"max_tokens", [](EngineRequest& r) { r.sampling.max_tokens = 0; }, "max_tokens"},
      {"empty", [](EngineRequest& r) { r.prompt_ids.clear(); }, "empty"},
      {"vocab", [](EngineRequest& r) { r.prompt_ids.push_back(500); }, "vocabulary"},
      {"context", [](EngineRequest& r) { r.sampling.max_tokens = 5000; }, "context"},
      {"stop", [](EngineRequest& r) { r.sampling.stop = {"x"}; }, "tokenizer"},
  };
  for (const auto& c : cases) {
    EngineRequest r = Greedy({5, 6, 7}, 4);
    c.mutate(r);
    auto s = engine->Submit(r);
    ASSERT_FALSE(s.ok()) << c.name;
    EXPECT_NE(std::string(s.status().message()).find(c.expect), std::string::npos)
        << c.name << ": " << s.status();
  }
}

}  // namespace
}  // namespace dsv3::engine_batching_test
