// The engine with its scheduler on the GPU: each request's greedy tokens through Engine on the
// CudaBackend equal the GPU model's own greedy loop (one prefill, then one token per step: the
// same shapes the engine runs alone), and every KV block comes back when requests end.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <vector>

#include "engine/engine.h"
#include "engine/model/model.h"
#include "tests/fixture_reference.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::FixturePath;

// The model lives in the backend's memory: as a member of the derived class it goes first.
class CudaEngineTest : public ::dsv3::testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto model = DeepseekV3Model::Load(FixturePath("ragged-fp8"), *gpu_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    ref_ = ::dsv3::testing::LoadFixtureReference("ragged");
  }
  // The model's greedy loop: prefill, then feed back the argmax, stopping at EOS or max_tokens.
  std::vector<int32_t> ModelGreedy(const std::vector<int32_t>& prompt, int max_tokens) {
    const int64_t vocab = model_->config().vocab_size;
    const auto& eos = model_->config().eos_token_ids;
    const int32_t n = static_cast<int32_t>(prompt.size());
    const int32_t blocks = (n + max_tokens + 15) / 16;
    KvCache cache(*gpu_, model_->config(), blocks, 16);
    std::vector<int32_t> table(blocks);
    std::iota(table.begin(), table.end(), 0);
    ForwardBatch batch;
    batch.token_ids = prompt;
    batch.sequences.push_back({0, n, 0, table});
    batch.logits_rows = {n - 1};
    std::vector<int32_t> out;
    std::vector<float> logits;
    for (int32_t pos = n; static_cast<int>(out.size()) < max_tokens; ++pos) {
      EXPECT_TRUE(model_->Forward(batch, cache, logits).ok());
      const int32_t next =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + vocab) -
                               logits.begin());
      out.push_back(next);
      if (std::find(eos.begin(), eos.end(), next) != eos.end()) break;
      batch.token_ids = {next};
      batch.sequences = {{0, 1, pos, table}};
      batch.logits_rows = {0};
    }
    return out;
  }

  std::unique_ptr<DeepseekV3Model> model_;
  ::dsv3::testing::FixtureReference ref_;
};

TEST_F(CudaEngineTest, GreedyThroughEngineEqualsTheModelsGreedyLoop) {
  EngineConfig c;
  c.num_kv_blocks = 128;
  c.block_size = 16;
  c.scheduler.max_batched_tokens = 4096;  // whole prompts in one step, as ModelGreedy
  auto engine = Engine::Create(*model_, nullptr, c);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    EngineRequest r;
    r.prompt_ids = ref_.prompts[i];
    r.sampling.temperature = 0;
    r.sampling.max_tokens = ref_.max_new_tokens;
    r.detokenize = false;
    auto stream = (*engine)->Submit(r);
    ASSERT_TRUE(stream.ok()) << stream.status();
    std::vector<int32_t> got;
    while (auto d = (*stream)->Next()) got.insert(got.end(), d->token_ids.begin(), d->token_ids.end());
    EXPECT_EQ(got, ModelGreedy(ref_.prompts[i], ref_.max_new_tokens)) << "prompt " << i;
  }
  const EngineStats s = (*engine)->Stats();
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
  EXPECT_EQ(s.running_sequences, 0);
}

}  // namespace
}  // namespace dsv3
