#include "server/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/status_util.h"

namespace dsv3::server {
namespace {

std::string Number(double value) { return absl::StrFormat("%.17g", value); }

void RenderRequestHistograms(const RequestHistograms& h, MetricsWriter& e) {
  e.Histogram("dsv3_time_to_first_token_seconds",
              "Time from the request's arrival (before tokenization) to its first token.",
              h.time_to_first_token);
  e.Histogram("dsv3_inter_token_latency_seconds",
              "Time between consecutive engine steps that emit tokens of a request (one sample "
              "per step; a speculative step's several tokens count once).",
              h.inter_token_latency);
  e.Histogram("dsv3_e2e_request_latency_seconds",
              "Time from the request's arrival to its end, per ended request.", h.end_to_end);
  e.Histogram("dsv3_request_queue_time_seconds",
              "Time from the request's arrival to its first scheduled step.", h.queue);
  e.Histogram("dsv3_request_prefill_time_seconds",
              "Time from the request's first scheduled step to its first token.", h.prefill);
  e.Histogram("dsv3_request_decode_time_seconds",
              "Time from the request's first token to its last.", h.decode);
  e.Histogram("dsv3_request_inference_time_seconds",
              "Time from the request's first scheduled step to its last token.", h.inference);
  e.Histogram("dsv3_request_time_per_output_token_seconds",
              "Mean time per output token after the first, per request with two or more.",
              h.time_per_output_token);
  e.Histogram("dsv3_request_prompt_tokens", "Prompt tokens per ended request.", h.prompt_tokens);
  e.Histogram("dsv3_request_generation_tokens", "Output tokens per ended request.",
              h.generation_tokens);
}

}  // namespace

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

MetricsWriter::MetricsWriter(std::string& out, const std::string& model_name)
    : out_(out), model_label_(absl::StrCat("model_name=\"", EscapeLabelValue(model_name), "\"")) {}

void MetricsWriter::Family(const std::string& name, const char* type, const char* help) {
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void MetricsWriter::Sample(const std::string& name, const std::string& labels, double value) {
  absl::StrAppend(&out_, name, "{", model_label_, labels.empty() ? "" : ",", labels, "} ",
                  Number(value), "\n");
}

void MetricsWriter::Single(const std::string& name, const char* type, const char* help,
                           double value) {
  Family(name, type, help);
  Sample(name, "", value);
}

void MetricsWriter::Histogram(const std::string& name, const char* help, const dsv3::Histogram& h) {
  Family(name, "histogram", help);
  int64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds().size(); ++i) {
    cumulative += h.bucket_counts()[i];
    Sample(name + "_bucket", absl::StrCat("le=\"", absl::StrFormat("%g", h.bounds()[i]), "\""),
           static_cast<double>(cumulative));
  }
  cumulative += h.bucket_counts().back();
  Sample(name + "_bucket", "le=\"+Inf\"", static_cast<double>(cumulative));
  Sample(name + "_sum", "", h.sum());
  Sample(name + "_count", "", static_cast<double>(h.count()));
}

ServerMetrics::ServerMetrics(std::string model_name) : model_name_(std::move(model_name)) {}

void ServerMetrics::RecordCall(const std::string& method, grpc::StatusCode code) {
  absl::MutexLock lock(&mu_);
  ++calls_[{method, GrpcCodeName(code)}];
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
  MetricsWriter e(out, model_name_);
  {
    absl::MutexLock lock(&mu_);
    e.Family("dsv3_requests_total", "counter", "Finished calls by method and gRPC status code.");
    for (const auto& [key, count] : calls_) {
      e.Sample("dsv3_requests_total",
               absl::StrCat("method=\"", key.first, "\",code=\"", key.second, "\""),
               static_cast<double>(count));
    }
    e.Single("dsv3_active_streams", "gauge", "Streaming calls in progress.", active_streams_);
  }
  if (engine == nullptr) return out;

  const EngineStats& s = *engine;
  e.Single("dsv3_queued_requests", "gauge", "Requests waiting to be scheduled.", s.queued_requests);
  e.Single("dsv3_running_sequences", "gauge", "Sequences in the running batch.",
           s.running_sequences);
  e.Single("dsv3_kv_blocks_total", "gauge", "KV cache blocks in the pool.", s.kv_blocks_total);
  e.Single("dsv3_kv_blocks_used", "gauge", "KV cache blocks held by sequences.", s.kv_blocks_used);
  e.Single("dsv3_kv_blocks_cached", "gauge", "KV cache blocks kept in the prefix cache.",
           s.kv_blocks_cached);
  e.Single("dsv3_kv_usage_ratio", "gauge", "Fraction of KV blocks held by sequences.",
           s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0);
  if (s.gpu_memory) {
    // Absent, not zero, on the CPU backend: there is no device memory to split.
    e.Family("dsv3_gpu_memory_bytes", "gauge",
             "Device memory this process holds on rank 0's GPU, by use: weights, kv_cache, "
             "cuda_graphs, workspace (the rest).");
    for (const GpuMemoryUseField& use : kGpuMemoryUses) {
      e.Sample("dsv3_gpu_memory_bytes", absl::StrCat("use=\"", use.label, "\""),
               static_cast<double>((*s.gpu_memory).*use.bytes));
    }
  }
  e.Single("dsv3_prefix_cache_queries_total", "counter", "Prefix cache block lookups.",
           s.prefix_cache_queries);
  e.Single("dsv3_prefix_cache_hits_total", "counter", "Prefix cache block hits.",
           s.prefix_cache_hits);
  e.Single("dsv3_prefix_cache_hit_rate", "gauge", "Prefix cache hits / lookups since start.",
           s.prefix_cache_queries > 0
               ? static_cast<double>(s.prefix_cache_hits) / s.prefix_cache_queries
               : 0.0);
  e.Single("dsv3_generated_tokens_total", "counter", "Output tokens generated.",
           s.generated_tokens);
  e.Single("dsv3_prompt_tokens_total", "counter", "Prompt tokens of ended requests.",
           s.prompt_tokens);
  e.Single("dsv3_preemptions_total", "counter", "Sequences preempted for KV space.", s.preemptions);
  e.Single("dsv3_engine_steps_total", "counter", "Engine steps run.", s.steps);
  e.Family("dsv3_finished_requests_total", "counter",
           "Requests that ended in the engine, by finish reason (one per choice).");
  for (FinishReason reason :
       {FinishReason::kStop, FinishReason::kLength, FinishReason::kAbort, FinishReason::kError}) {
    e.Sample("dsv3_finished_requests_total",
             absl::StrCat("finished_reason=\"", FinishReasonName(reason), "\""),
             static_cast<double>(s.finished_requests[static_cast<int>(reason)]));
  }
  RenderRequestHistograms(s.requests, e);
  if (s.spec_proposed.empty()) return out;
  // Speculative decoding, labelled by draft position (0: the first draft of a step).
  const struct {
    const char* name;
    const char* type;
    const char* help;
  } spec[] = {
      {"dsv3_spec_proposed_total", "counter", "MTP draft tokens verified, by draft position."},
      {"dsv3_spec_accepted_total", "counter", "MTP draft tokens accepted, by draft position."},
      {"dsv3_spec_acceptance_rate", "gauge",
       "Accepted / verified drafts since start, by position."}};
  for (int m = 0; m < 3; ++m) {
    e.Family(spec[m].name, spec[m].type, spec[m].help);
    for (size_t j = 0; j < s.spec_proposed.size(); ++j) {
      const double proposed = static_cast<double>(s.spec_proposed[j]);
      const double value = m == 0         ? proposed
                           : m == 1       ? static_cast<double>(s.spec_accepted[j])
                           : proposed > 0 ? s.spec_accepted[j] / proposed
                                          : 0.0;
      e.Sample(spec[m].name, absl::StrCat("position=\"", j, "\""), value);
    }
  }
  return out;
}

}  // namespace dsv3::server
