// Request latency and size statistics, defined as vLLM v1 defines its request metrics
// (vllm/v1/metrics/stats.py) and measured on the monotonic clock. One request's moments:
//
//   arrival --queue--> first scheduled --prefill--> first token --decode--> last token ... end
//   |<------------- time to first token ------------->|                                   |
//   |<--------------------------------- end to end ---------------------------------------->|
//
// `arrival` is when a front end received the request (before tokenization); engine steps give
// the other moments, one time point per step for every request in it. The time to first token
// is therefore exactly queue + prefill, and inference = prefill + decode.
//
// Inter-token latency is vLLM v1's per-iteration sample: every engine step that emits tokens of
// a request after its first such step records the time since that request's previous emitting
// step. A speculative step that emits several tokens (accepted drafts + one) records one gap,
// not one per token; without speculative decoding each step emits one token, so a request of n
// tokens records n - 1 gaps.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace dsv3 {

using MonotonicClock = std::chrono::steady_clock;
using MonotonicTime = MonotonicClock::time_point;

// Samples counted into buckets with fixed, ascending, inclusive upper bounds (Prometheus' `le`),
// plus a last bucket for everything above. Not thread-safe: the engine thread fills it and
// publishes copies.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);

  void Observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // Samples per bucket, not cumulative: bounds().size() + 1 entries, the last one above every
  // bound (+Inf).
  const std::vector<int64_t>& bucket_counts() const { return bucket_counts_; }
  double sum() const { return sum_; }
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> bucket_counts_;
  double sum_ = 0;
  int64_t count_ = 0;
};

// Bucket bounds in seconds: vLLM's (vllm/v1/metrics/loggers.py), with a few finer ones below
// vLLM's smallest where small models and short prompts answer in milliseconds.
std::vector<double> TimeToFirstTokenBuckets();
std::vector<double> InterTokenLatencyBuckets();  // also the per-request time per output token
std::vector<double> RequestPhaseBuckets();       // end to end, queue, prefill, decode, inference
// Token counts: 1, 2, 5, 10, 20, 50, ... up to `max_tokens` (vLLM's build_1_2_5_buckets).
std::vector<double> TokenCountBuckets(int64_t max_tokens);

// Every request histogram. Which requests each one counts is said per member.
struct RequestHistograms {
  // `max_tokens`: the largest prompt or output a request may have (the token buckets' top).
  explicit RequestHistograms(int64_t max_tokens);

  Histogram time_to_first_token;  // arrival -> first token; at the first token
  Histogram inter_token_latency;  // one per emitting step after the first (see above)
  // At the end of each request, for the phases it reached:
  Histogram end_to_end;             // arrival -> end; every request
  Histogram queue;                  // arrival -> first scheduled; requests that were scheduled
  Histogram prefill;                // first scheduled -> first token; requests with a token
  Histogram decode;                 // first token -> last token; requests with a token
  Histogram inference;              // first scheduled -> last token; requests with a token
  Histogram time_per_output_token;  // decode / (tokens - 1); requests with >= 2 tokens
  Histogram prompt_tokens;          // every request
  Histogram generation_tokens;      // every request (0 when it ended before its first token)

  // Mean seconds per output token after each request's first, over all tokens (not the mean of
  // the per-request means): decode time / tokens after the first.
  double MeanTimePerOutputToken() const;
};

// The timing of one request for the latency it reports itself (its last delta's usage).
struct RequestLatency {
  double time_to_first_token_s = 0;    // 0 without a token
  double time_per_output_token_s = 0;  // 0 with fewer than 2 tokens
};

// One request's moments, fed by the engine thread as they happen; records into
// RequestHistograms.
class RequestTimeline {
 public:
  explicit RequestTimeline(MonotonicTime arrival) : arrival_(arrival) {}

  // A step at `t` scheduled the request. Only the first counts: a preempted request that is
  // scheduled again keeps its queue time, and its recomputation counts as prefill or decode.
  void Scheduled(MonotonicTime t);
  // A step at `t` emitted one or more tokens of the request: the first such step records the
  // time to first token, every later one an inter-token latency.
  void TokensEmitted(MonotonicTime t, RequestHistograms& histograms);
  // The request ended at `t` with `prompt_tokens` and, in all, `generated_tokens` emitted:
  // records the phases it reached and returns its own latency.
  RequestLatency Ended(MonotonicTime t, int32_t prompt_tokens, int32_t generated_tokens,
                       RequestHistograms& histograms) const;

 private:
  MonotonicTime arrival_;
  MonotonicTime scheduled_{};
  MonotonicTime first_token_{};
  MonotonicTime last_token_{};
  bool scheduled_set_ = false;
  bool first_token_set_ = false;
};

}  // namespace dsv3
