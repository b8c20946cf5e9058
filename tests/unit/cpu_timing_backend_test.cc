// TimingBackend around the CPU backend with the host clock: ops pass through unchanged, op and
// layer times are taken per name and per BeginLayer only while their timing is on, sections
// reported by the inner backend are timed inside their op, and graphable parts run their body
// either way; a step replayed from a graph reports the layer marks its capture made.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/step_graph_capture.h"
#include "engine/backend/timing_backend.h"

namespace dsv3::cpu_timing_backend_test {
namespace {

std::vector<std::string> Names(const std::vector<std::pair<std::string, float>>& times) {
  std::vector<std::string> names;
  for (const auto& [name, ms] : times) {
    EXPECT_GE(ms, 0.0f) << name;
    names.push_back(name);
  }
  return names;
}

class TimingBackendTest : public ::testing::Test {
 protected:
  TimingBackendTest() : timed_(cpu_, MakeHostWorkClock) {}
  TensorView View(std::vector<float>& v) {
    return TensorView::Contiguous(v.data(), DType::kF32, {1, static_cast<int64_t>(v.size())});
  }
  CpuBackend cpu_{1};
  TimingBackend timed_;
};

TEST_F(TimingBackendTest, OpsPassThroughAndAreTimedOnlyWhileOn) {
  std::vector<float> a = {1, 2}, b = {3, 4}, out(2);
  timed_.Add(View(a), View(b), View(out));
  EXPECT_EQ(out, (std::vector<float>{4, 6}));
  EXPECT_TRUE(timed_.TakeOpTimes().empty());

  timed_.SetOpTiming(true);
  timed_.Add(View(a), View(b), View(out));
  timed_.SiluMul(View(a), View(b), View(out));
  timed_.Add(View(out), View(b), View(out));
  EXPECT_EQ(Names(timed_.TakeOpTimes()), (std::vector<std::string>{"add", "silu_mul"}));
  EXPECT_TRUE(timed_.TakeOpTimes().empty());  // taken
}

TEST_F(TimingBackendTest, SectionsAreTimedInsideTheirOp) {
  timed_.SetOpTiming(true);
  std::vector<float> w = {1, 0, 0, 1}, x = {2, 3}, y(2);
  std::vector<Tensor> storage;
  auto weight = cpu_.MakeLinear(TensorView::Contiguous(w.data(), DType::kF32, {2, 2}),
                                TensorView(), storage);
  ASSERT_TRUE(weight.ok());
  timed_.BeginSection("- outer");
  timed_.BeginSection("- inner");
  timed_.Linear(View(x), *weight, View(y));
  timed_.EndSection();
  timed_.EndSection();
  EXPECT_EQ(y, x);
  EXPECT_EQ(Names(timed_.TakeOpTimes()),
            (std::vector<std::string>{"linear f32", "- inner", "- outer"}));
}

TEST_F(TimingBackendTest, LayerTimesFollowBeginLayer) {
  timed_.BeginLayer(0);
  EXPECT_TRUE(timed_.LayerTimes().empty());
  timed_.SetLayerTiming(true);
  for (int64_t layer : {0, 1, -1}) timed_.BeginLayer(layer);
  const auto times = timed_.LayerTimes();
  ASSERT_EQ(times.size(), 3u);
  EXPECT_EQ(times[0].first, 0);
  EXPECT_EQ(times[1].first, 1);
  EXPECT_EQ(times[2].first, -1);
  EXPECT_TRUE(timed_.LayerTimes().empty());
}

// A backend with graphs, as far as the runner sees them: Capture runs the body on the host
// (standing for recording it), Launch runs nothing (standing for a replay).
class FakeGraphs final : public StepGraphCapture {
 public:
  void BeginMeasuredRun() override {}
  Measure EndMeasuredRun() override { return {}; }
  absl::StatusOr<GraphId> Capture(int64_t, absl::FunctionRef<absl::Status()> body) override {
    if (absl::Status st = body(); !st.ok()) return st;
    return next_id_++;
  }
  void Launch(GraphId, absl::FunctionRef<absl::Status()>) override { ++launches; }
  void DropAll() override {}
  int64_t memory_bytes() const override { return 0; }
  uint64_t plan_epoch() const override { return 0; }
  int launches = 0;

 private:
  GraphId next_id_ = 7;
};

// Marks are never reused (a graph's marks stay valid across Reset, as the CUDA clock's do); the
// time between two marks is the number of marks between them.
class CountingClock final : public WorkClock {
 public:
  int64_t Mark() override { return next_++; }
  float ElapsedMs(int64_t from, int64_t to) override { return static_cast<float>(to - from); }
  void Reset() override {}

 private:
  int64_t next_ = 0;
};

class BackendWithGraphs final : public ForwardingBackend {
 public:
  explicit BackendWithGraphs(Backend& inner) : ForwardingBackend(inner) {}
  StepGraphCapture* step_graphs() override { return &graphs; }
  FakeGraphs graphs;
};

TEST(TimingBackendGraphsTest, AReplayedStepReportsTheLayerMarksItsCaptureMade) {
  CpuBackend cpu(1);
  BackendWithGraphs inner(cpu);
  TimingBackend timed(inner, [] { return std::make_unique<CountingClock>(); });
  const auto step = [&] {
    for (int64_t layer : {0, 1, 2, -1}) timed.BeginLayer(layer);
    return absl::OkStatus();
  };
  // Layer timing off: the inner graphs as they are.
  EXPECT_EQ(timed.step_graphs(), &inner.graphs);

  timed.SetLayerTiming(true);
  StepGraphCapture* graphs = timed.step_graphs();
  ASSERT_NE(graphs, nullptr);
  auto id = graphs->Capture(0, step);
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(timed.LayerTimes().empty());  // recorded, not run
  for (int replay = 0; replay < 2; ++replay) {
    timed.step_graphs()->Launch(*id, step);
    std::vector<int64_t> layers;
    for (const auto& [layer, ms] : timed.LayerTimes()) {
      EXPECT_GT(ms, 0.0f);
      layers.push_back(layer);
    }
    EXPECT_EQ(layers, (std::vector<int64_t>{0, 1, 2, -1})) << "replay " << replay;
  }
  EXPECT_EQ(inner.graphs.launches, 2);
  // Op timing: no graphs at all (a replay has no ops to time).
  timed.SetOpTiming(true);
  EXPECT_EQ(timed.step_graphs(), nullptr);
}

}  // namespace
}  // namespace dsv3::cpu_timing_backend_test
