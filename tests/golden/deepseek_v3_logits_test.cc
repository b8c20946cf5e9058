// The model on the CPU backend against transformers' float32 references (tests/data/fixtures,
// made by tools/fixtures/make_fixtures.py), and the invariants that make batching and caching
// safe: incremental decode equals one prefill, absorbed MLA equals naive MLA, and a sequence's
// logits do not depend on what else is in the batch.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/model/model.h"
#include "engine/util/npy.h"
#include "tests/fixture_reference.h"
#include "tests/test_util.h"

namespace dsv3::deepseek_v3_logits_test {
namespace {

using ::dsv3::testing::FixturePath;

using Reference = ::dsv3::testing::FixtureReference;
using ::dsv3::testing::LoadFixtureReference;
using ::dsv3::testing::RelativeError;

std::vector<float> RowsOf(const std::vector<float>& v, int64_t begin, int64_t end, int64_t width) {
  return std::vector<float>(v.begin() + begin * width, v.begin() + end * width);
}

class ModelGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto model = DeepseekV3Model::Load(FixturePath(GetParam()), backend_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    fixture_ = GetParam().substr(0, GetParam().rfind('-'));
    ref_ = LoadFixtureReference(fixture_);
  }

  int64_t vocab() const { return model_->config().vocab_size; }

  // Contiguous blocks [first, first + n) as a block table.
  static std::vector<int32_t> Blocks(int32_t first, int32_t n) {
    std::vector<int32_t> t(n);
    for (int32_t i = 0; i < n; ++i) t[i] = first + i;
    return t;
  }

  // Logits of every position of `prompt` from one prefill.
  std::vector<float> Prefill(const std::vector<int32_t>& prompt, MlaMode mode) {
    const int32_t n = static_cast<int32_t>(prompt.size());
    KvCache cache(backend_, model_->config(), (n + 15) / 16, 16);
    ForwardBatch batch;
    batch.token_ids = prompt;
    batch.sequences.push_back({0, n, 0, Blocks(0, (n + 15) / 16)});
    for (int32_t r = 0; r < n; ++r) batch.logits_rows.push_back(r);
    std::vector<float> logits;
    EXPECT_TRUE(model_->Forward(batch, cache, logits, mode).ok());
    return logits;
  }

  CpuBackend backend_{0};
  std::unique_ptr<DeepseekV3Model> model_;
  std::string fixture_;
  Reference ref_;
};

TEST_P(ModelGoldenTest, PrefillLogitsMatchTransformers) {
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    auto want = ReadNpyF32(FixturePath(fixture_ + "-ref/logits_" + std::to_string(i) + ".npy"));
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_EQ(want->shape, (std::vector<int64_t>{static_cast<int64_t>(ref_.prompts[i].size()), vocab()}));
    const std::vector<float> got = Prefill(ref_.prompts[i], MlaMode::kAuto);
    EXPECT_LT(RelativeError(got, want->data), 1e-4) << "prompt " << i << " of length "
                                                    << ref_.prompts[i].size();
  }
}

TEST_P(ModelGoldenTest, AbsorbedMlaEqualsNaiveMla) {
  for (const auto& prompt : ref_.prompts) {
    const auto naive = Prefill(prompt, MlaMode::kNaive);
    const auto absorbed = Prefill(prompt, MlaMode::kAbsorbed);
    EXPECT_LT(RelativeError(absorbed, naive), 1e-5) << "prompt length " << prompt.size();
  }
}

// Prefill half the prompt, then feed the rest one token per step through the cache: every
// position's logits must equal those of one full prefill.
TEST_P(ModelGoldenTest, IncrementalDecodeEqualsFullPrefill) {
  const std::vector<int32_t>& prompt = ref_.prompts[3];  // 64 tokens
  const int32_t n = static_cast<int32_t>(prompt.size()), split = n / 2;
  const std::vector<float> full = Prefill(prompt, MlaMode::kAuto);

  KvCache cache(backend_, model_->config(), 8, 16);
  const std::vector<int32_t> table = {5, 2, 7, 0};  // deliberately not in order
  ForwardBatch first;
  first.token_ids.assign(prompt.begin(), prompt.begin() + split);
  first.sequences.push_back({0, split, 0, table});
  for (int32_t r = 0; r < split; ++r) first.logits_rows.push_back(r);
  std::vector<float> logits;
  EXPECT_TRUE(model_->Forward(first, cache, logits).ok());
  EXPECT_LT(RelativeError(logits, RowsOf(full, 0, split, vocab())), 1e-5);

  for (int32_t pos = split; pos < n; ++pos) {
    ForwardBatch step;
    step.token_ids = {prompt[pos]};
    step.sequences.push_back({0, 1, pos, table});
    step.logits_rows = {0};
    EXPECT_TRUE(model_->Forward(step, cache, logits).ok());
    EXPECT_LT(RelativeError(logits, RowsOf(full, pos, pos + 1, vocab())), 1e-5) << "position " << pos;
  }
}

// All prompts in one batch, mixing a prefill chunk, whole prompts and single tokens: each
// sequence's logits equal its logits alone.
TEST_P(ModelGoldenTest, MixedBatchEqualsEachPromptAlone) {
  KvCache cache(backend_, model_->config(), 64, 16);
  ForwardBatch batch;
  int32_t next_block = 0;
  std::vector<std::pair<int32_t, int32_t>> rows;  // first logits row, count per prompt
  for (const auto& prompt : ref_.prompts) {
    const int32_t n = static_cast<int32_t>(prompt.size());
    const int32_t blocks = (n + 15) / 16;
    SequenceSlice s{batch.num_tokens(), n, 0, Blocks(next_block, blocks)};
    next_block += blocks;
    rows.emplace_back(static_cast<int32_t>(batch.logits_rows.size()), n);
    for (int32_t i = 0; i < n; ++i) batch.logits_rows.push_back(s.token_begin + i);
    batch.token_ids.insert(batch.token_ids.end(), prompt.begin(), prompt.end());
    batch.sequences.push_back(std::move(s));
  }
  ASSERT_LE(next_block, 64);
  std::vector<float> logits;
  EXPECT_TRUE(model_->Forward(batch, cache, logits).ok());
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    const auto alone = Prefill(ref_.prompts[i], MlaMode::kAuto);
    const auto [first, count] = rows[i];
    EXPECT_LT(RelativeError(RowsOf(logits, first, first + count, vocab()), alone), 1e-5)
        << "prompt " << i;
  }
}

TEST_P(ModelGoldenTest, GreedyContinuationsMatchTransformers) {
  const auto& eos = model_->config().eos_token_ids;
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    const auto& prompt = ref_.prompts[i];
    const int32_t n = static_cast<int32_t>(prompt.size());
    KvCache cache(backend_, model_->config(), (n + ref_.max_new_tokens + 15) / 16, 16);
    const auto table = Blocks(0, (n + ref_.max_new_tokens + 15) / 16);
    ForwardBatch batch;
    batch.token_ids = prompt;
    batch.sequences.push_back({0, n, 0, table});
    batch.logits_rows = {n - 1};
    std::vector<float> logits;
    std::vector<int32_t> generated;
    for (int32_t pos = n;; ++pos) {
      EXPECT_TRUE(model_->Forward(batch, cache, logits).ok());
      const int32_t next = static_cast<int32_t>(
          std::max_element(logits.begin(), logits.end()) - logits.begin());
      generated.push_back(next);
      if (std::find(eos.begin(), eos.end(), next) != eos.end() ||
          static_cast<int>(generated.size()) == ref_.max_new_tokens) {
        break;
      }
      batch.token_ids = {next};
      batch.sequences = {{0, 1, pos, table}};
      batch.logits_rows = {0};
    }
    EXPECT_EQ(generated, ref_.continuations[i]) << "prompt " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelGoldenTest,
                         ::testing::ValuesIn(::dsv3::testing::AllFixtureCheckpoints()),
                         ::dsv3::testing::FixtureTestName);

}  // namespace
}  // namespace dsv3::deepseek_v3_logits_test
