// TimingBackend around the CPU backend with the host clock: ops pass through unchanged, op and
// layer times are taken per name and per BeginLayer only while their timing is on, sections
// reported by the inner backend are timed inside their op, and graphable parts run their body
// either way.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/timing_backend.h"

namespace dsv3 {
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

}  // namespace
}  // namespace dsv3
