#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/sampling/stop_checker.h"

namespace dsv3::sampling_stop_checker_test {
namespace {

constexpr int32_t kEos = 2;

struct Step {
  int32_t token;
  std::string delta;
  std::string released;  // expected text of the update
  StopReason reason = StopReason::kNone;
};

void RunSteps(const SamplingParams& params, const std::vector<Step>& steps) {
  StopChecker checker(params, {kEos});
  for (size_t i = 0; i < steps.size(); ++i) {
    const StopUpdate u = checker.Append(steps[i].token, steps[i].delta);
    EXPECT_EQ(u.text, steps[i].released) << "step " << i;
    EXPECT_EQ(u.reason, steps[i].reason) << "step " << i;
    EXPECT_EQ(checker.finished(), steps[i].reason != StopReason::kNone) << "step " << i;
  }
}

SamplingParams WithStops(std::vector<std::string> stop, int32_t max_tokens = 100) {
  SamplingParams p;
  p.stop = std::move(stop);
  p.max_tokens = max_tokens;
  return p;
}

TEST(StopCheckerTest, ReleasesEverythingWithoutStopStrings) {
  RunSteps(WithStops({}), {{10, "Hello", "Hello"}, {11, " world", " world"}});
}

TEST(StopCheckerTest, StopStringSplitAcrossDeltasIsHeldBackThenDropped) {
  RunSteps(WithStops({"STOP"}), {
                                    {10, "abc S", "abc "},
                                    {11, "T", ""},
                                    {12, "OP and more", "", StopReason::kStopString},
                                });
}

TEST(StopCheckerTest, HeldBackTextIsReleasedWhenItCannotStartAStopString) {
  RunSteps(WithStops({"STOP"}), {
                                    {10, "abc ST", "abc "},
                                    {11, "ART", "START"},
                                    {12, "S", ""},
                                    {13, "x", "Sx"},
                                });
}

TEST(StopCheckerTest, EarliestOfSeveralStopStringsWins) {
  StopChecker checker(WithStops({"world", "lo w"}), {kEos});
  StopUpdate u = checker.Append(10, "hello world");
  EXPECT_EQ(u.text, "hel");
  EXPECT_EQ(u.reason, StopReason::kStopString);
  EXPECT_EQ(u.stop_string, "lo w");
}

TEST(StopCheckerTest, HoldsBackLongestPrefixOverAllStopStrings) {
  RunSteps(WithStops({"xyz", "abcd"}), {
                                           {10, "__abc", "__"},
                                           {11, "d!", "", StopReason::kStopString},
                                       });
}

TEST(StopCheckerTest, EosDropsItsTextAndReleasesHeldBackText) {
  RunSteps(WithStops({"STOP"}), {
                                    {10, "go S", "go "},
                                    {kEos, "</s>", "S", StopReason::kEos},
                                });
}

TEST(StopCheckerTest, IgnoreEosTreatsEosAsText) {
  SamplingParams p = WithStops({});
  p.ignore_eos = true;
  RunSteps(p, {{kEos, "</s>", "</s>"}, {10, "x", "x"}});
}

TEST(StopCheckerTest, StopTokenIds) {
  SamplingParams p = WithStops({});
  p.stop_token_ids = {7};
  StopChecker checker(p, {kEos});
  EXPECT_FALSE(checker.Append(10, "a").finished());
  const StopUpdate u = checker.Append(7, "<|stop|>");
  EXPECT_EQ(u.reason, StopReason::kStopToken);
  EXPECT_EQ(u.stop_token, 7);
  EXPECT_EQ(u.text, "");
}

TEST(StopCheckerTest, MaxTokensReleasesHeldBackText) {
  RunSteps(WithStops({"STOP"}, 2), {
                                       {10, "a", "a"},
                                       {11, "ST", "ST", StopReason::kMaxTokens},
                                   });
}

TEST(StopCheckerTest, StopStringOnTheLastAllowedTokenWinsOverMaxTokens) {
  RunSteps(WithStops({"STOP"}, 2), {
                                       {10, "a", "a"},
                                       {11, "STOP", "", StopReason::kStopString},
                                   });
}

TEST(StopCheckerTest, MinTokensDelaysEosStopTokensAndStopStrings) {
  SamplingParams p = WithStops({"!"});
  p.min_tokens = 2;
  p.stop_token_ids = {7};
  RunSteps(p, {
                  {kEos, "", ""},
                  {10, "hi!", "hi!"},
                  {7, "<x>", "", StopReason::kStopToken},
              });
  RunSteps(p, {
                  {10, "a", "a"},
                  {11, "b", "b"},
                  {12, "c!d", "c", StopReason::kStopString},
              });
}

}  // namespace
}  // namespace dsv3::sampling_stop_checker_test
