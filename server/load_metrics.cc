#include "server/load_metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dsv3::server {

namespace {

void Gauge(std::string& out, const char* name, const char* type, const char* help, double value) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                  absl::StrFormat("%.17g", value), "\n");
}

}  // namespace

void RenderLoadMetrics(const LoadProgress::Snapshot& s, std::string& out) {
  if (!s.started) return;
  Gauge(out, "dsv3_load_bytes_total", "counter", "Checkpoint bytes read so far by the weight load.",
        static_cast<double>(s.bytes_read));
  Gauge(out, "dsv3_load_bytes_expected", "gauge",
        "Checkpoint bytes the weight load reads in all (this rank's slices).",
        static_cast<double>(s.bytes_expected));
  Gauge(out, "dsv3_load_seconds", "gauge",
        "Seconds the weight load has run (its duration once complete).", s.seconds);
  Gauge(out, "dsv3_load_shards_done", "gauge", "Checkpoint shards read completely.", s.shards_done);
  Gauge(out, "dsv3_load_shards_total", "gauge", "Checkpoint shards the weight load reads from.",
        s.shards_total);
  Gauge(out, "dsv3_load_complete", "gauge", "1 once every weight is on the device, else 0.",
        s.finished ? 1 : 0);
}

}  // namespace dsv3::server
