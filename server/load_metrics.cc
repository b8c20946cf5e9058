#include "server/load_metrics.h"

namespace dsv3::server {

void RenderLoadMetrics(const LoadProgress::Snapshot& s, MetricsWriter& out) {
  if (!s.started) return;
  out.Single("dsv3_load_bytes_total", "counter", "Checkpoint bytes read so far by the weight load.",
             static_cast<double>(s.bytes_read));
  out.Single("dsv3_load_bytes_expected", "gauge",
             "Checkpoint bytes the weight load reads in all (this rank's slices).",
             static_cast<double>(s.bytes_expected));
  out.Single("dsv3_load_seconds", "gauge",
             "Seconds the weight load has run (its duration once complete).", s.seconds);
  out.Single("dsv3_load_shards_done", "gauge", "Checkpoint shards read completely.",
             s.shards_done);
  out.Single("dsv3_load_shards_total", "gauge", "Checkpoint shards the weight load reads from.",
             s.shards_total);
  out.Single("dsv3_load_complete", "gauge", "1 once every weight is on the device, else 0.",
             s.finished ? 1 : 0);
}

}  // namespace dsv3::server
