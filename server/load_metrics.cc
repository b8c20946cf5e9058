#include "server/load_metrics.h"

#include "server/metrics.h"

namespace dsv3::server {

void RenderLoadMetrics(const LoadProgress::Snapshot& s, const std::string& model_name,
                       std::string& out) {
  if (!s.started) return;
  MetricsWriter w(out, model_name);
  w.Single("dsv3_load_bytes_total", "counter", "Checkpoint bytes read so far by the weight load.",
           static_cast<double>(s.bytes_read));
  w.Single("dsv3_load_bytes_expected", "gauge",
           "Checkpoint bytes the weight load reads in all (this rank's slices).",
           static_cast<double>(s.bytes_expected));
  w.Single("dsv3_load_seconds", "gauge",
           "Seconds the weight load has run (its duration once complete).", s.seconds);
  w.Single("dsv3_load_shards_done", "gauge", "Checkpoint shards read completely.",
           s.shards_done);
  w.Single("dsv3_load_shards_total", "gauge", "Checkpoint shards the weight load reads from.",
           s.shards_total);
  w.Single("dsv3_load_complete", "gauge", "1 once every weight is on the device, else 0.",
           s.finished ? 1 : 0);
}

}  // namespace dsv3::server
