// Server metrics in the Prometheus text format: what the front ends count (calls by method and
// code, streams in progress) plus, once the model is loaded, the engine's counters, gauges and
// request histograms (engine/request_metrics.h), read at scrape time. Every sample carries the
// label model_name, the served model name (vLLM's label). docs/serving.md maps each metric to
// its vLLM counterpart. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "engine/engine.h"
#include "grpcpp/support/status.h"

namespace dsv3::server {

// `value` escaped for a Prometheus label value: backslash, double quote and newline.
std::string EscapeLabelValue(const std::string& value);

// Appends metric families to `out` in the text format, every sample labelled
// model_name="<model_name>" first. For whatever /metrics shows, so that no sample lacks the label.
class MetricsWriter {
 public:
  MetricsWriter(std::string& out, const std::string& model_name);

  // "# HELP" and "# TYPE" lines.
  void Family(const std::string& name, const char* type, const char* help);
  // `labels`: further labels, formatted (`method="Generate",code="OK"`), or empty.
  void Sample(const std::string& name, const std::string& labels, double value);
  // A family of one sample with no further labels.
  void Single(const std::string& name, const char* type, const char* help, double value);
  // `name`_bucket{le=...} (cumulative), `name`_sum, `name`_count.
  void Histogram(const std::string& name, const char* help, const dsv3::Histogram& h);

 private:
  std::string& out_;
  const std::string model_label_;  // model_name="..."
};

class ServerMetrics {
 public:
  // `model_name`: the served model name (the first --served-model-name, else the model
  // directory's name).
  explicit ServerMetrics(std::string model_name);

  // One finished call of `method` ("Generate", "Chat", ...) with its final code.
  void RecordCall(const std::string& method, grpc::StatusCode code);
  void StreamStarted();
  void StreamEnded();
  int64_t active_streams() const;

  // The whole exposition. `engine` is null while the model loads (engine metrics are left out).
  std::string Render(const EngineStats* engine) const;
  const std::string& model_name() const { return model_name_; }

 private:
  const std::string model_name_;
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, int64_t> calls_ ABSL_GUARDED_BY(mu_);
  int64_t active_streams_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dsv3::server
