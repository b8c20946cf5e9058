// The weight load's progress in the Prometheus text format (this rank's: rank 0's in a
// tensor-parallel group), appended to /metrics from the moment the server listens, so a
// dashboard or an operator can watch a long load and see it finish.
#pragma once

#include "engine/weights/load_progress.h"
#include "server/metrics.h"

namespace dsv3::server {

// dsv3_load_bytes_total, dsv3_load_bytes_expected, dsv3_load_seconds, dsv3_load_shards_done,
// dsv3_load_shards_total, dsv3_load_complete. Nothing before the load has started.
void RenderLoadMetrics(const LoadProgress::Snapshot& load, MetricsWriter& out);

}  // namespace dsv3::server
