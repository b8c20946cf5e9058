// Server metrics in the Prometheus text format: counters and histograms the reactors update,
// plus gauges read from the engine at scrape time. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "engine/engine.h"
#include "grpcpp/support/status.h"

namespace dsv3::server {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // `name`_bucket{le=...}, `name`_sum, `name`_count.
  void Render(const std::string& name, const std::string& help, std::string& out) const;

 private:
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<int64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative; +Inf last
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();

  // One finished call of `method` ("Generate", "Chat", ...) with its final code.
  void RecordCall(const std::string& method, grpc::StatusCode code);
  // From the last delta of a request that produced tokens.
  void RecordLatency(double time_to_first_token_s, double time_per_output_token_s,
                     int32_t completion_tokens);
  void StreamStarted();
  void StreamEnded();
  int64_t active_streams() const;

  // The whole exposition. `engine` is null while the model loads (engine gauges are left out).
  std::string Render(const EngineStats* engine) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, int64_t> calls_ ABSL_GUARDED_BY(mu_);
  int64_t active_streams_ ABSL_GUARDED_BY(mu_) = 0;
  Histogram ttft_;
  Histogram tpot_;
};

}  // namespace dsv3::server
