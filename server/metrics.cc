#include "server/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/status_util.h"

namespace dsv3::server {
namespace {

void Header(std::string& out, const std::string& name, const char* type, const char* help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void Metric(std::string& out, const std::string& name, const char* type, const char* help,
            double value) {
  Header(out, name, type, help);
  absl::StrAppend(&out, name, " ", absl::StrFormat("%.17g", value), "\n");
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::Render(const std::string& name, const std::string& help, std::string& out) const {
  absl::MutexLock lock(&mu_);
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " histogram\n");
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    absl::StrAppend(&out, name, "_bucket{le=\"", absl::StrFormat("%g", bounds_[i]), "\"} ",
                    cumulative, "\n");
  }
  cumulative += counts_.back();
  absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", cumulative, "\n");
  absl::StrAppend(&out, name, "_sum ", absl::StrFormat("%.17g", sum_), "\n");
  absl::StrAppend(&out, name, "_count ", count_, "\n");
}

ServerMetrics::ServerMetrics()
    // From a few ms (small models, short prompts) to tens of seconds (long prefills under load).
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      tpot_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void ServerMetrics::RecordCall(const std::string& method, grpc::StatusCode code) {
  absl::MutexLock lock(&mu_);
  ++calls_[{method, GrpcCodeName(code)}];
}

void ServerMetrics::RecordLatency(double ttft_s, double tpot_s, int32_t completion_tokens) {
  if (completion_tokens >= 1) ttft_.Observe(ttft_s);
  if (completion_tokens >= 2) tpot_.Observe(tpot_s);
}

void ServerMetrics::StreamStarted() {
  absl::MutexLock lock(&mu_);
  ++active_streams_;
}

void ServerMetrics::StreamEnded() {
  absl::MutexLock lock(&mu_);
  --active_streams_;
}

int64_t ServerMetrics::active_streams() const {
  absl::MutexLock lock(&mu_);
  return active_streams_;
}

std::string ServerMetrics::Render(const EngineStats* engine) const {
  std::string out;
  {
    absl::MutexLock lock(&mu_);
    Header(out, "dsv3_requests_total", "counter", "Finished calls by method and gRPC status code.");
    for (const auto& [key, count] : calls_) {
      absl::StrAppend(&out, "dsv3_requests_total{method=\"", key.first, "\",code=\"", key.second,
                      "\"} ", count, "\n");
    }
    Metric(out, "dsv3_active_streams", "gauge", "Streaming calls in progress.", active_streams_);
  }
  ttft_.Render("dsv3_time_to_first_token_seconds",
               "Time from admission to the first output token, per request.", out);
  tpot_.Render("dsv3_time_per_output_token_seconds",
               "Mean time per output token after the first, per request.", out);
  if (engine == nullptr) return out;

  const EngineStats& s = *engine;
  Metric(out, "dsv3_queued_requests", "gauge", "Requests waiting to be scheduled.",
         s.queued_requests);
  Metric(out, "dsv3_running_sequences", "gauge", "Sequences in the running batch.",
         s.running_sequences);
  Metric(out, "dsv3_kv_blocks_total", "gauge", "KV cache blocks in the pool.", s.kv_blocks_total);
  Metric(out, "dsv3_kv_blocks_used", "gauge", "KV cache blocks held by sequences.",
         s.kv_blocks_used);
  Metric(out, "dsv3_kv_blocks_cached", "gauge", "KV cache blocks kept in the prefix cache.",
         s.kv_blocks_cached);
  Metric(out, "dsv3_kv_usage_ratio", "gauge", "Fraction of KV blocks held by sequences.",
         s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0);
  Metric(out, "dsv3_prefix_cache_queries_total", "counter", "Prefix cache block lookups.",
         s.prefix_cache_queries);
  Metric(out, "dsv3_prefix_cache_hits_total", "counter", "Prefix cache block hits.",
         s.prefix_cache_hits);
  Metric(out, "dsv3_prefix_cache_hit_rate", "gauge", "Prefix cache hits / lookups since start.",
         s.prefix_cache_queries > 0
             ? static_cast<double>(s.prefix_cache_hits) / s.prefix_cache_queries
             : 0.0);
  Metric(out, "dsv3_generated_tokens_total", "counter", "Output tokens generated.",
         s.generated_tokens);
  Metric(out, "dsv3_prompt_tokens_total", "counter", "Prompt tokens admitted.", s.prompt_tokens);
  Metric(out, "dsv3_preemptions_total", "counter", "Sequences preempted for KV space.",
         s.preemptions);
  Metric(out, "dsv3_engine_steps_total", "counter", "Engine steps run.", s.steps);
  Metric(out, "dsv3_aborted_requests_total", "counter", "Requests aborted in the engine.",
         s.aborted_requests);
  if (s.spec_proposed.empty()) return out;
  // Speculative decoding, labelled by draft position (0: the first draft of a step).
  const struct {
    const char* name;
    const char* type;
    const char* help;
  } spec[] = {
      {"dsv3_spec_proposed_total", "counter", "MTP draft tokens verified, by draft position."},
      {"dsv3_spec_accepted_total", "counter", "MTP draft tokens accepted, by draft position."},
      {"dsv3_spec_acceptance_rate", "gauge", "Accepted / verified drafts since start, by position."}};
  for (int m = 0; m < 3; ++m) {
    Header(out, spec[m].name, spec[m].type, spec[m].help);
    for (size_t j = 0; j < s.spec_proposed.size(); ++j) {
      const double proposed = static_cast<double>(s.spec_proposed[j]);
      const double value = m == 0   ? proposed
                           : m == 1 ? static_cast<double>(s.spec_accepted[j])
                           : proposed > 0 ? s.spec_accepted[j] / proposed
                                          : 0.0;
      absl::StrAppend(&out, spec[m].name, "{position=\"", j, "\"} ",
                      absl::StrFormat("%.17g", value), "\n");
    }
  }
  return out;
}

}  // namespace dsv3::server
