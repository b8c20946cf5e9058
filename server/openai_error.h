// Errors of the OpenAI-compatible HTTP API: an absl::Status (optionally carrying the request
// field it is about) turned into OpenAI's error shape and HTTP status:
//   {"error": {"message": ..., "type": ..., "param": ... | null, "code": ... | null}}
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dsv3::server::openai {

// InvalidArgument about request field `param` (e.g. "temperature", "messages[2].role").
absl::Status InvalidParam(absl::string_view param, absl::string_view message);
// `status` marked as being about request field `param`.
absl::Status WithParam(absl::Status status, absl::string_view param);
// The field a status is about: the one InvalidParam attached, else the leading field name of a
// shared validation message ("sampling.top_p must be ..." -> "top_p"); nullopt if none.
std::optional<std::string> ParamOf(const absl::Status& status);

struct ApiError {
  int http_status = 500;
  std::string type;     // invalid_request_error, authentication_error, ...
  std::string message;  // the status message, with the gRPC-side "sampling." prefixes removed
  std::optional<std::string> param;
  std::optional<std::string> code;  // e.g. model_not_found, invalid_api_key
};

// 400 InvalidArgument/FailedPrecondition/OutOfRange, 401 Unauthenticated, 404 NotFound,
// 429 ResourceExhausted, 503 Unavailable, 500 otherwise.
ApiError ToApiError(const absl::Status& status);
std::string ErrorJson(const ApiError& error);

}  // namespace dsv3::server::openai
