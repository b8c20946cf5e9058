// Conversions between absl::Status (the engine's errors) and grpc::Status (what clients see).
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace dsv3::server {

// One to one: every absl code has the gRPC code of the same number and name.
grpc::Status ToGrpcStatus(const absl::Status& status);

// "INVALID_ARGUMENT", "OK", ... (for metrics labels, logs and dsv3-client's error line).
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace dsv3::server
