// The weight load's progress in the Prometheus text format (this rank's: rank 0's in a
// tensor-parallel group), appended to /metrics from the moment the server listens, so a
// dashboard or an operator can watch a long load and see it finish.
#pragma once

#include <string>

#include "engine/weights/load_progress.h"

namespace dsv3::server {

// dsv3_load_bytes_total, dsv3_load_bytes_expected, dsv3_load_seconds, dsv3_load_shards_done,
// dsv3_load_shards_total, dsv3_load_complete, labelled with `model_name` as every dsv3_ sample.
// Nothing before the load has started.
void RenderLoadMetrics(const LoadProgress::Snapshot& load, const std::string& model_name,
                       std::string& out);

}  // namespace dsv3::server
