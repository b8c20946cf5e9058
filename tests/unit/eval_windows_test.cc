// Window planning of dsv3-eval: which prefills a sequence becomes and what each scores.
#include <gtest/gtest.h>

#include "engine/eval/windows.h"

namespace dsv3::eval_windows_test {
namespace {

struct Case {
  const char* name;
  int64_t num_tokens;
  int32_t context;
  std::vector<EvalWindow> want;  // {begin, length, first_scored}
};

TEST(EvalWindowsTest, PlansTheTable) {
  const Case cases[] = {
      {"two tokens score one", 2, 8, {{0, 2, 0}}},
      {"short line is one window, all scored", 5, 8, {{0, 5, 0}}},
      {"exactly the context is still one window", 8, 8, {{0, 8, 0}}},
      {"exact multiple: second halves", 16, 8, {{0, 8, 4}, {8, 8, 4}}},
      {"ragged last window", 20, 8, {{0, 8, 4}, {8, 8, 4}, {16, 4, 2}}},
      {"last piece of 3 scores one", 19, 8, {{0, 8, 4}, {8, 8, 4}, {16, 3, 1}}},
      {"last piece of 2 scores nothing: dropped", 18, 8, {{0, 8, 4}, {8, 8, 4}}},
      {"last piece of 1: dropped", 17, 8, {{0, 8, 4}, {8, 8, 4}}},
      {"odd context: second half from length / 2", 10, 5, {{0, 5, 2}, {5, 5, 2}}},
      {"smallest context", 4, 3, {{0, 3, 1}}},
  };
  for (const Case& c : cases) {
    auto windows = PlanWindows(c.num_tokens, c.context);
    ASSERT_TRUE(windows.ok()) << c.name << ": " << windows.status();
    EXPECT_EQ(*windows, c.want) << c.name;
  }
}

TEST(EvalWindowsTest, ScoredCountsOfADefaultContextMatchLlamaPerplexity) {
  // 512-token windows score tokens 257..511 of each: 255 per window.
  auto windows = PlanWindows(4 * 512, 512);
  ASSERT_TRUE(windows.ok());
  ASSERT_EQ(windows->size(), 4u);
  for (const EvalWindow& w : *windows) EXPECT_EQ(w.num_scored(), 255);
}

TEST(EvalWindowsTest, ASequenceOfOneTokenScoresNothingAndSaysSo) {
  for (int64_t n : {0, 1}) {
    auto windows = PlanWindows(n, 8);
    EXPECT_EQ(windows.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(windows.status().message().find("at least 2"), std::string::npos) << windows.status();
  }
}

TEST(EvalWindowsTest, AContextTooSmallToScoreIsRefused) {
  auto windows = PlanWindows(10, 2);
  EXPECT_EQ(windows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(windows.status().message().find("context 2"), std::string::npos) << windows.status();
}

}  // namespace
}  // namespace dsv3::eval_windows_test
