#include "engine/request_metrics.h"

#include <algorithm>
#include <utility>

namespace dsv3 {
namespace {

double Seconds(MonotonicClock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), bucket_counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  // The first bound >= value: bounds are inclusive upper limits.
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++bucket_counts_[bucket];
  sum_ += value;
  ++count_;
}

std::vector<double> TimeToFirstTokenBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}

std::vector<double> InterTokenLatencyBuckets() {
  // vLLM's start at 10 ms; the first three resolve small models and GPU decode of short
  // contexts.
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3,
          0.4,   0.5,    0.75,  1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
}

std::vector<double> RequestPhaseBuckets() {
  // vLLM's start at 0.3 s; the first five resolve queue and prefill times of a lightly loaded
  // server.
  return {0.01, 0.025, 0.05, 0.1,  0.2,  0.3,  0.5,  0.8,   1.0,   1.5,   2.0,   2.5,    5.0,
          10.0, 15.0,  20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

std::vector<double> TokenCountBuckets(int64_t max_tokens) {
  std::vector<double> bounds;
  for (int64_t scale = 1;; scale *= 10) {
    for (int64_t mantissa : {1, 2, 5}) {
      if (mantissa * scale > max_tokens) return bounds;
      bounds.push_back(static_cast<double>(mantissa * scale));
    }
  }
}

RequestHistograms::RequestHistograms(int64_t max_tokens)
    : time_to_first_token(TimeToFirstTokenBuckets()),
      inter_token_latency(InterTokenLatencyBuckets()),
      end_to_end(RequestPhaseBuckets()),
      queue(RequestPhaseBuckets()),
      prefill(RequestPhaseBuckets()),
      decode(RequestPhaseBuckets()),
      inference(RequestPhaseBuckets()),
      time_per_output_token(InterTokenLatencyBuckets()),
      prompt_tokens(TokenCountBuckets(max_tokens)),
      generation_tokens(TokenCountBuckets(max_tokens)) {}

double RequestHistograms::MeanTimePerOutputToken() const {
  // Every request with a token is in `decode` once; the tokens after the first of each:
  const double tokens_after_first = generation_tokens.sum() - static_cast<double>(decode.count());
  return tokens_after_first > 0 ? decode.sum() / tokens_after_first : 0.0;
}

void RequestTimeline::Scheduled(MonotonicTime t) {
  if (scheduled_set_) return;
  scheduled_ = t;
  scheduled_set_ = true;
}

void RequestTimeline::TokensEmitted(MonotonicTime t, RequestHistograms& histograms) {
  if (!first_token_set_) {
    first_token_ = t;
    first_token_set_ = true;
    histograms.time_to_first_token.Observe(Seconds(t - arrival_));
  } else {
    histograms.inter_token_latency.Observe(Seconds(t - last_token_));
  }
  last_token_ = t;
}

RequestLatency RequestTimeline::Ended(MonotonicTime t, int32_t prompt_tokens,
                                      int32_t generated_tokens,
                                      RequestHistograms& histograms) const {
  histograms.end_to_end.Observe(Seconds(t - arrival_));
  histograms.prompt_tokens.Observe(prompt_tokens);
  histograms.generation_tokens.Observe(generated_tokens);
  if (scheduled_set_) histograms.queue.Observe(Seconds(scheduled_ - arrival_));
  RequestLatency latency;
  if (!first_token_set_ || generated_tokens < 1) return latency;
  latency.time_to_first_token_s = Seconds(first_token_ - arrival_);
  const double decode = Seconds(last_token_ - first_token_);
  histograms.prefill.Observe(Seconds(first_token_ - scheduled_));
  histograms.decode.Observe(decode);
  histograms.inference.Observe(Seconds(last_token_ - scheduled_));
  if (generated_tokens >= 2) {
    latency.time_per_output_token_s = decode / (generated_tokens - 1);
    histograms.time_per_output_token.Observe(latency.time_per_output_token_s);
  }
  return latency;
}

}  // namespace dsv3
