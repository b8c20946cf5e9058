// The decode graph runner (engine/model/step_graphs.h) on the CPU, with a capture double that
// "replays" by running the captured step again: which steps are measured, captured, replayed or
// left eager, that padded steps give the real rows the logits and hidden states of an unpadded
// step, that padding rows write no block but the scratch block, and that the graph memory bound
// and op timing turn graphs off. (The real captures are gpu_cuda_graphs_test.)
#include "engine/model/step_graphs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/forwarding_backend.h"
#include "engine/backend/timing_backend.h"
#include "engine/model/model.h"
#include "tests/test_util.h"

namespace dsv3::engine_step_graphs_test {
namespace {

using ::dsv3::testing::FixturePath;

// Records graphs without capturing anything: Launch runs the step again.
class FakeCapture final : public StepGraphCapture {
 public:
  void BeginMeasuredRun() override { ++measured_runs; }
  Measure EndMeasuredRun() override {
    const bool host_work = host_work_runs > 0;
    host_work_runs = std::max(0, host_work_runs - 1);
    return {kStepBytes, host_work};
  }
  absl::StatusOr<GraphId> Capture(int64_t bytes,
                                  absl::FunctionRef<absl::Status()> body) override {
    EXPECT_EQ(bytes, kStepBytes);
    if (memory + bytes > limit) return absl::ResourceExhaustedError("graph memory");
    memory += bytes;
    return next_id++;
  }
  void Launch(GraphId id, absl::FunctionRef<absl::Status()> body) override {
    EXPECT_LT(id, next_id);
    ++launches;
    EXPECT_TRUE(body().ok());
  }
  void DropAll() override { memory = 0, ++drops; }
  int64_t memory_bytes() const override { return memory; }
  uint64_t plan_epoch() const override { return 1; }

  static constexpr int64_t kStepBytes = 1000;
  int host_work_runs = 0;  // the next measured runs that report host work
  int64_t limit = INT64_MAX, memory = 0;
  int measured_runs = 0, launches = 0, drops = 0;
  GraphId next_id = 0;
};

class CapturingCpuBackend final : public ForwardingBackend {
 public:
  explicit CapturingCpuBackend(Backend& cpu) : ForwardingBackend(cpu) {}
  StepGraphCapture* step_graphs() override { return &capture; }
  FakeCapture capture;
};

constexpr int32_t kBlock = 16;
constexpr int32_t kBlocksPerSeq = 4;

double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

class StepGraphsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = DeepseekV3Model::Load(FixturePath("tiny-bf16"), backend_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  // Block table of sequence s: interleaved with the others' blocks.
  static std::vector<int32_t> Table(int s, int num_seqs) {
    std::vector<int32_t> t(kBlocksPerSeq);
    for (int32_t i = 0; i < kBlocksPerSeq; ++i) t[i] = i * num_seqs + s;
    return t;
  }

  // Prefills `num_seqs` prompts on both caches (eagerly), then runs `steps` steps of k tokens per
  // sequence through the runner (graphed cache) and through Forward (eager cache), comparing the
  // logits of every row (with `last_rows_only`, of each sequence's last row) and, with
  // `with_hidden`, the hidden states.
  void CompareSteps(DecodeGraphRunner& runner, int num_seqs, int k, int steps, bool with_hidden,
                    bool last_rows_only = false) {
    const ModelConfig& c = model_->config();
    KvCache graphed(backend_, c, num_seqs * kBlocksPerSeq, kBlock);
    KvCache eager(backend_, c, num_seqs * kBlocksPerSeq, kBlock);
    std::vector<int32_t> context(num_seqs);
    ForwardBatch prefill;
    for (int s = 0; s < num_seqs; ++s) {
      // More than kAbsorbedMaxNewTokens each: the prefill is never a graph step.
      const int32_t len = 17 + (7 * s) % 11, begin = prefill.num_tokens();
      for (int32_t i = 0; i < len; ++i) prefill.token_ids.push_back((5 + 13 * s + 3 * i) % 200);
      prefill.sequences.push_back({begin, len, 0, Table(s, num_seqs)});
      prefill.logits_rows.push_back(begin + len - 1);
      context[s] = len;
    }
    std::vector<float> logits_g, logits_e, hidden_g, hidden_e;
    ASSERT_TRUE(runner.Forward(prefill, graphed, logits_g).ok());
    ASSERT_TRUE(model_->Forward(prefill, eager, logits_e).ok());
    for (int step = 0; step < steps; ++step) {
      ForwardBatch batch;
      for (int s = 0; s < num_seqs; ++s) {
        const int32_t begin = batch.num_tokens();
        for (int32_t i = 0; i < k; ++i) {
          batch.token_ids.push_back((11 * step + 7 * s + i) % 200);
          if (!last_rows_only || i == k - 1) batch.logits_rows.push_back(begin + i);
          if (with_hidden) batch.hidden_rows.push_back(begin + i);
        }
        batch.sequences.push_back({begin, k, context[s], Table(s, num_seqs)});
        context[s] += k;
      }
      ASSERT_TRUE(runner.Forward(batch, graphed, logits_g, MlaMode::kAuto,
                                 with_hidden ? &hidden_g : nullptr).ok());
      ASSERT_TRUE(model_->Forward(batch, eager, logits_e, MlaMode::kAuto,
                                  with_hidden ? &hidden_e : nullptr).ok());
      ASSERT_EQ(logits_g.size(), logits_e.size());
      EXPECT_LT(RelError(logits_g, logits_e), 1e-4) << num_seqs << " sequences, step " << step;
      if (with_hidden) {
        ASSERT_EQ(hidden_g.size(), hidden_e.size());
        EXPECT_LT(RelError(hidden_g, hidden_e), 1e-4) << num_seqs << " sequences, step " << step;
      }
    }
    // Blocks no sequence owns stay as they were made (zeros): padding rows wrote only into
    // the scratch block.
    std::set<int32_t> owned;
    for (int s = 0; s < num_seqs; ++s) {
      for (int32_t b : Table(s, num_seqs)) owned.insert(b);
    }
    const TensorView& layer = graphed.layer(0);
    const int64_t per_block = layer.dim(1) * layer.dim(2);
    for (int64_t b = 0; b < graphed.num_blocks(); ++b) {
      if (owned.contains(static_cast<int32_t>(b))) continue;
      const float* data = layer.ptr<float>() + b * per_block;
      EXPECT_TRUE(std::all_of(data, data + per_block, [](float v) { return v == 0; }))
          << "block " << b;
    }
  }

  CpuBackend cpu_{2};
  CapturingCpuBackend backend_{cpu_};
  std::unique_ptr<DeepseekV3Model> model_;
};

TEST_F(StepGraphsTest, PaddedDecodeStepsMatchUnpaddedOnesAtNonBucketSizes) {
  for (int num_seqs : {1, 3, 5, 17}) {
    DecodeGraphRunner runner(*model_);
    CompareSteps(runner, num_seqs, /*k=*/1, /*steps=*/4, /*with_hidden=*/false);
    const DecodeGraphRunner::Stats stats = runner.stats();
    // One shape (padded size, context bucket 256): measured, captured, then replayed.
    EXPECT_EQ(stats.measured, 1) << num_seqs;
    EXPECT_EQ(stats.captured, 1) << num_seqs;
    EXPECT_EQ(stats.replayed, 2) << num_seqs;
    EXPECT_EQ(stats.eager, 1) << "the prefill";
    EXPECT_EQ(stats.graphs, 1);
  }
}

TEST_F(StepGraphsTest, VerifyStepsWithHiddenStatesMatch) {
  DecodeGraphRunner runner(*model_);
  CompareSteps(runner, /*num_seqs=*/3, /*k=*/3, /*steps=*/3, /*with_hidden=*/true);
  EXPECT_EQ(runner.stats().captured, 1);
  EXPECT_EQ(runner.stats().replayed, 1);
}

// The caller's rows are picked out of the graph's every-row outputs.
TEST_F(StepGraphsTest, VerifyStepsWithSomeRowsAskedMatch) {
  DecodeGraphRunner runner(*model_);
  CompareSteps(runner, /*num_seqs=*/3, /*k=*/3, /*steps=*/3, /*with_hidden=*/true,
               /*last_rows_only=*/true);
  EXPECT_EQ(runner.stats().replayed, 1);
}

TEST_F(StepGraphsTest, BatchesOfOnePaddedSizeShareItsGraph) {
  DecodeGraphRunner runner(*model_);
  const ModelConfig& c = model_->config();
  KvCache cache(backend_, c, 8 * kBlocksPerSeq, kBlock);
  std::vector<float> logits;
  // 3, 4, 3, 4 sequences pad to 4: one graph; then 5 pads to 8: a second one.
  const struct {
    int sequences;
    int64_t measured, captured, replayed;
  } steps[] = {{3, 1, 0, 0}, {4, 1, 1, 0}, {3, 1, 1, 1}, {4, 1, 1, 2}, {5, 2, 1, 2}, {5, 2, 2, 2}};
  for (const auto& step : steps) {
    ForwardBatch batch;
    for (int s = 0; s < step.sequences; ++s) {
      batch.token_ids.push_back(s + 1);
      batch.logits_rows.push_back(s);
      batch.sequences.push_back({s, 1, 10, Table(s, 8)});
    }
    ASSERT_TRUE(runner.Forward(batch, cache, logits).ok());
    EXPECT_EQ(logits.size(), static_cast<size_t>(step.sequences * c.vocab_size));
    const DecodeGraphRunner::Stats stats = runner.stats();
    EXPECT_EQ(stats.measured, step.measured) << step.sequences;
    EXPECT_EQ(stats.captured, step.captured) << step.sequences;
    EXPECT_EQ(stats.replayed, step.replayed) << step.sequences;
  }
}

TEST_F(StepGraphsTest, HostWorkDelaysTheCapture) {
  backend_.capture.host_work_runs = 1;  // e.g. a cache filled at the first run
  DecodeGraphRunner runner(*model_);
  CompareSteps(runner, /*num_seqs=*/2, /*k=*/1, /*steps=*/4, /*with_hidden=*/false);
  EXPECT_EQ(runner.stats().measured, 2);
  EXPECT_EQ(runner.stats().captured, 1);
  EXPECT_EQ(runner.stats().replayed, 1);
}

TEST_F(StepGraphsTest, TheMemoryBoundKeepsNewShapesEager) {
  backend_.capture.limit = FakeCapture::kStepBytes;  // room for one graph
  DecodeGraphRunner runner(*model_);
  KvCache cache(backend_, model_->config(), 8 * kBlocksPerSeq, kBlock);
  std::vector<float> logits;
  // 3 sequences (padded to 4): measured, captured. 5 (padded to 8): measured, then refused.
  for (int sequences : {3, 3, 5, 5, 5}) {
    ForwardBatch batch;
    for (int s = 0; s < sequences; ++s) {
      batch.token_ids.push_back(s + 1);
      batch.logits_rows.push_back(s);
      batch.sequences.push_back({s, 1, 10, Table(s, 8)});
    }
    ASSERT_TRUE(runner.Forward(batch, cache, logits).ok());
  }
  const DecodeGraphRunner::Stats stats = runner.stats();
  EXPECT_EQ(stats.captured, 1);
  EXPECT_EQ(stats.measured, 2);
  EXPECT_EQ(stats.over_budget, 1);
  EXPECT_EQ(stats.eager, 2) << "the refused capture's step and the one after";
  EXPECT_EQ(stats.graphs, 1);
  EXPECT_LE(backend_.capture.memory, backend_.capture.limit);
}

TEST_F(StepGraphsTest, NoGraphsWhileOpsAreTimed) {
  TimingBackend timed(backend_, [] { return MakeHostWorkClock(); });
  EXPECT_EQ(timed.step_graphs(), &backend_.capture);
  timed.SetOpTiming(true);
  EXPECT_EQ(timed.step_graphs(), nullptr);
}

}  // namespace
}  // namespace dsv3::engine_step_graphs_test
