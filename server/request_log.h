// Request-scoped log lines of both APIs, as structured events (engine/util/log_format.h): every
// one carries request_id and method, so that a request's lines can be picked out of the log
// (--log-format json) by key.
#pragma once

#include <string_view>

#include "engine/engine.h"
#include "engine/util/log_format.h"

namespace dsv3::server {

// "finished" with the choice's finish reason, token counts and latencies (milliseconds).
void LogFinished(std::string_view request_id, std::string_view method, const OutputDelta& last);

}  // namespace dsv3::server
