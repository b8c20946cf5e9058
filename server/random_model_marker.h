// The file that marks a model directory as random weights made for tests (tests/smoke_model.h):
// dsv3-server warns when it serves one and GetModelInfo reports is_smoke_model.
#pragma once

namespace dsv3::server {

inline constexpr const char kRandomModelMarker[] = "dsv3_smoke_model.json";

}  // namespace dsv3::server
