// The request histograms (engine/request_metrics.h): bucketing at the bounds, the bucket sets,
// and what one request's timeline records, step by step, on a fake clock (time points built
// from milliseconds since an arbitrary epoch).
#include <cstdint>
#include <string>
#include <vector>

#include "engine/request_metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::engine_request_metrics_test {
namespace {

using ::testing::ElementsAreArray;

MonotonicTime At(double ms) {
  return MonotonicTime(std::chrono::duration_cast<MonotonicClock::duration>(
      std::chrono::duration<double, std::milli>(ms)));
}

TEST(Histogram, BoundsAreInclusiveUpperLimits) {
  const struct {
    double value;
    size_t bucket;  // 0: le=0.1, 1: le=1, 2: +Inf
  } cases[] = {{-1, 0}, {0, 0}, {0.05, 0}, {0.1, 0}, {0.1000001, 1}, {1, 1}, {1.5, 2}, {1e9, 2}};
  for (const auto& c : cases) {
    Histogram h({0.1, 1});
    h.Observe(c.value);
    std::vector<int64_t> want(3, 0);
    want[c.bucket] = 1;
    EXPECT_THAT(h.bucket_counts(), ElementsAreArray(want)) << c.value;
    EXPECT_EQ(h.count(), 1);
    EXPECT_DOUBLE_EQ(h.sum(), c.value);
  }
}

TEST(Histogram, BucketSetsAscendAndCoverVllmsRange) {
  const struct {
    const char* name;
    std::vector<double> bounds;
    double top;  // vLLM's largest bound for the same metric
  } sets[] = {{"time to first token", TimeToFirstTokenBuckets(), 2560},
              {"inter-token latency", InterTokenLatencyBuckets(), 80},
              {"request phases", RequestPhaseBuckets(), 7680}};
  for (const auto& s : sets) {
    ASSERT_FALSE(s.bounds.empty()) << s.name;
    for (size_t i = 1; i < s.bounds.size(); ++i) {
      EXPECT_LT(s.bounds[i - 1], s.bounds[i]) << s.name << " at " << i;
    }
    EXPECT_LE(s.bounds.front(), 0.01) << s.name << ": resolves milliseconds";
    EXPECT_EQ(s.bounds.back(), s.top) << s.name;
  }
}

TEST(Histogram, TokenCountBucketsAreOneTwoFiveUpToTheLimit) {
  const struct {
    int64_t max_tokens;
    std::vector<double> want;
  } cases[] = {
      {0, {}},
      {1, {1}},
      {4, {1, 2}},
      {5, {1, 2, 5}},
      {100, {1, 2, 5, 10, 20, 50, 100}},
      {163840,
       {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000}}};
  for (const auto& c : cases) {
    EXPECT_THAT(TokenCountBuckets(c.max_tokens), ElementsAreArray(c.want)) << c.max_tokens;
  }
}

// One request's life on the fake clock, and what the histograms must hold after it.
struct TimelineCase {
  std::string name;
  std::vector<double> scheduled_ms;      // every step that scheduled it (arrival: 0 ms)
  std::vector<double> emit_ms;           // every step that emitted tokens of it
  std::vector<int32_t> tokens_per_step;  // how many each of those steps emitted
  double end_ms;
  // Expected samples, in ms; an empty list: the histogram has none.
  std::vector<double> ttft, itl, queue, prefill, decode, inference, tpot;
};

std::vector<TimelineCase> TimelineCases() {
  return {
      {.name = "three tokens, one a step",
       .scheduled_ms = {5},
       .emit_ms = {20, 30, 45},
       .tokens_per_step = {1, 1, 1},
       .end_ms = 45,
       .ttft = {20},
       .itl = {10, 15},  // every gap
       .queue = {5},
       .prefill = {15},
       .decode = {25},
       .inference = {40},
       .tpot = {12.5}},
      {.name = "speculative steps emit several tokens: one gap per step",
       .scheduled_ms = {2},
       .emit_ms = {10, 20, 40},
       .tokens_per_step = {1, 3, 2},
       .end_ms = 41,
       .ttft = {10},
       .itl = {10, 20},
       .queue = {2},
       .prefill = {8},
       .decode = {30},
       .inference = {38},
       .tpot = {6}},  // 30 ms over the 5 tokens after the first
      {.name = "preempted and scheduled again: the first scheduling counts",
       .scheduled_ms = {5, 25},
       .emit_ms = {30, 50},
       .tokens_per_step = {1, 1},
       .end_ms = 50,
       .ttft = {30},
       .itl = {20},
       .queue = {5},
       .prefill = {25},
       .decode = {20},
       .inference = {45},
       .tpot = {20}},
      {.name = "one token: no gap, no time per output token",
       .scheduled_ms = {1},
       .emit_ms = {7},
       .tokens_per_step = {1},
       .end_ms = 7,
       .ttft = {7},
       .itl = {},
       .queue = {1},
       .prefill = {6},
       .decode = {0},
       .inference = {6},
       .tpot = {}},
      {.name = "aborted while queued: end to end only",
       .scheduled_ms = {},
       .emit_ms = {},
       .tokens_per_step = {},
       .end_ms = 30,
       .ttft = {},
       .itl = {},
       .queue = {},
       .prefill = {},
       .decode = {},
       .inference = {},
       .tpot = {}},
      {.name = "aborted during prefill: queue time, no token phases",
       .scheduled_ms = {3},
       .emit_ms = {},
       .tokens_per_step = {},
       .end_ms = 30,
       .ttft = {},
       .itl = {},
       .queue = {3},
       .prefill = {},
       .decode = {},
       .inference = {},
       .tpot = {}},
  };
}

void ExpectSamples(const Histogram& h, const std::vector<double>& want_ms,
                   const std::string& what) {
  double sum = 0;
  for (double ms : want_ms) sum += ms / 1e3;
  EXPECT_EQ(h.count(), static_cast<int64_t>(want_ms.size())) << what;
  EXPECT_NEAR(h.sum(), sum, 1e-9) << what;
}

TEST(RequestTimeline, RecordsEachPhaseItReached) {
  for (const TimelineCase& c : TimelineCases()) {
    SCOPED_TRACE(c.name);
    RequestHistograms h(1000);
    RequestTimeline timeline(At(0));
    // Events in time order, as the engine thread sees them.
    size_t next_emit = 0;
    int32_t generated = 0;
    for (double s : c.scheduled_ms) {
      while (next_emit < c.emit_ms.size() && c.emit_ms[next_emit] < s) {
        timeline.TokensEmitted(At(c.emit_ms[next_emit]), h);
        generated += c.tokens_per_step[next_emit++];
      }
      timeline.Scheduled(At(s));
    }
    for (; next_emit < c.emit_ms.size(); ++next_emit) {
      timeline.TokensEmitted(At(c.emit_ms[next_emit]), h);
      generated += c.tokens_per_step[next_emit];
    }
    // The time to first token and the gaps are recorded as the tokens come, before the end.
    ExpectSamples(h.time_to_first_token, c.ttft, "ttft before the end");
    ExpectSamples(h.inter_token_latency, c.itl, "itl before the end");
    EXPECT_EQ(h.end_to_end.count(), 0);

    const RequestLatency latency = timeline.Ended(At(c.end_ms), 17, generated, h);
    ExpectSamples(h.time_to_first_token, c.ttft, "ttft");
    ExpectSamples(h.inter_token_latency, c.itl, "itl");
    ExpectSamples(h.end_to_end, {c.end_ms}, "e2e");
    ExpectSamples(h.queue, c.queue, "queue");
    ExpectSamples(h.prefill, c.prefill, "prefill");
    ExpectSamples(h.decode, c.decode, "decode");
    ExpectSamples(h.inference, c.inference, "inference");
    ExpectSamples(h.time_per_output_token, c.tpot, "tpot");
    EXPECT_EQ(h.prompt_tokens.count(), 1);
    EXPECT_EQ(h.prompt_tokens.sum(), 17);
    EXPECT_EQ(h.generation_tokens.count(), 1);
    EXPECT_EQ(h.generation_tokens.sum(), generated);
    EXPECT_NEAR(latency.time_to_first_token_s, c.ttft.empty() ? 0 : c.ttft[0] / 1e3, 1e-9);
    EXPECT_NEAR(latency.time_per_output_token_s, c.tpot.empty() ? 0 : c.tpot[0] / 1e3, 1e-9);

    // What the definitions promise, whatever the case: ttft = queue + prefill,
    // inference = prefill + decode, and the gaps add up to the decode time.
    if (!c.ttft.empty()) {
      EXPECT_NEAR(h.time_to_first_token.sum(), h.queue.sum() + h.prefill.sum(), 1e-12);
      EXPECT_NEAR(h.inference.sum(), h.prefill.sum() + h.decode.sum(), 1e-12);
      EXPECT_NEAR(h.inter_token_latency.sum(), h.decode.sum(), 1e-12);
    }
  }
}

TEST(RequestHistograms, MeanTimePerOutputTokenIsOverTokensNotRequests) {
  RequestHistograms h(1000);
  // 10 ms for the one token after the first; 180 ms for the 9 after the first (20 ms each).
  RequestTimeline a(At(0));
  a.Scheduled(At(0));
  a.TokensEmitted(At(10), h);
  a.TokensEmitted(At(20), h);
  a.Ended(At(20), 4, 2, h);
  RequestTimeline b(At(0));
  b.Scheduled(At(0));
  for (int i = 1; i <= 10; ++i) b.TokensEmitted(At(20 * i), h);
  b.Ended(At(200), 4, 10, h);
  RequestTimeline aborted(At(0));  // no token: counts in neither
  aborted.Ended(At(5), 4, 0, h);
  EXPECT_NEAR(h.MeanTimePerOutputToken(), 0.190 / 10, 1e-12);
  // The per-request histogram averages the requests' means instead: (10 + 20) / 2 ms.
  EXPECT_NEAR(h.time_per_output_token.sum() / h.time_per_output_token.count(), 0.015, 1e-12);
}

}  // namespace
}  // namespace dsv3::engine_request_metrics_test
