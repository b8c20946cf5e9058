#include "engine/sampling/sampling_params.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

namespace dsv3::sampling_params_test {
namespace {

using ::testing::HasSubstr;

TEST(SamplingParamsTest, DefaultsAreValid) { EXPECT_TRUE(SamplingParams().Validate().ok()); }

TEST(SamplingParamsTest, AcceptsBoundaries) {
  const std::function<void(SamplingParams&)> rows[] = {
      [](SamplingParams& p) { p.temperature = 0; },
      [](SamplingParams& p) { p.top_p = 1; },
      [](SamplingParams& p) { p.top_p = 1e-6f; },
      [](SamplingParams& p) { p.top_k = 0; },
      [](SamplingParams& p) { p.top_k = 1; },
      [](SamplingParams& p) { p.min_p = 1; },
      [](SamplingParams& p) { p.presence_penalty = -2; },
      [](SamplingParams& p) { p.frequency_penalty = 2; },
      [](SamplingParams& p) { p.min_tokens = p.max_tokens = 1; },
      [](SamplingParams& p) { p.logprobs = kMaxLogprobs; },
      [](SamplingParams& p) { p.stop = std::vector<std::string>(kMaxStopStrings, "x"); },
      [](SamplingParams& p) { p.stop_token_ids = {0}; },
  };
  for (size_t i = 0; i < std::size(rows); ++i) {
    SamplingParams p;
    rows[i](p);
    EXPECT_TRUE(p.Validate().ok()) << "row " << i << ": " << p.Validate();
  }
}

TEST(SamplingParamsTest, EachErrorNamesItsParameter) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Row {
    std::function<void(SamplingParams&)> set;
    std::string message;
  };
  const Row rows[] = {
      {[](SamplingParams& p) { p.temperature = -1; }, "temperature must be >= 0, got -1"},
      {[&](SamplingParams& p) { p.temperature = nan; }, "temperature must be >= 0, got nan"},
      {[&](SamplingParams& p) { p.temperature = inf; }, "temperature must be >= 0, got inf"},
      {[](SamplingParams& p) { p.top_p = 0; }, "top_p must be in (0, 1], got 0"},
      {[](SamplingParams& p) { p.top_p = 1.5; }, "top_p must be in (0, 1], got 1.5"},
      {[](SamplingParams& p) { p.top_k = -2; }, "top_k must be -1, 0 (disabled) or >= 1, got -2"},
      {[](SamplingParams& p) { p.min_p = -0.5; }, "min_p must be in [0, 1], got -0.5"},
      {[](SamplingParams& p) { p.min_p = 2; }, "min_p must be in [0, 1], got 2"},
      {[](SamplingParams& p) { p.repetition_penalty = 0; },
       "repetition_penalty must be > 0, got 0"},
      {[](SamplingParams& p) { p.presence_penalty = 2.5; },
       "presence_penalty must be in [-2, 2], got 2.5"},
      {[](SamplingParams& p) { p.frequency_penalty = -3; },
       "frequency_penalty must be in [-2, 2], got -3"},
      {[](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens must be >= 1, got 0"},
      {[](SamplingParams& p) { p.min_tokens = -1; }, "min_tokens must be >= 0, got -1"},
      {[](SamplingParams& p) { p.min_tokens = 17; },
       "min_tokens must be <= max_tokens (16), got 17"},
      {[](SamplingParams& p) { p.logprobs = 21; }, "logprobs must be in [0, 20], got 21"},
      {[](SamplingParams& p) { p.logprobs = -1; }, "logprobs must be in [0, 20], got -1"},
      {[](SamplingParams& p) {
         p.stop_token_ids = {5, -3};
       },
       "stop_token_ids[1] must be >= 0, got -3"},
      {[](SamplingParams& p) { p.stop = std::vector<std::string>(17, "x"); },
       "stop must be at most 16 strings, got 17"},
      {[](SamplingParams& p) {
         p.stop = {"a", ""};
       },
       "stop[1] must not be empty"},
  };
  for (const Row& row : rows) {
    SamplingParams p;
    row.set(p);
    const absl::Status status = p.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << row.message;
    EXPECT_EQ(status.message(), row.message);
  }
}

}  // namespace
}  // namespace dsv3::sampling_params_test
