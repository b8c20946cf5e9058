#include "server/openai_error.h"

#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"

namespace dsv3::server::openai {
namespace {

constexpr char kParamPayload[] = "type.dsv3/openai.param";

}  // namespace

absl::Status WithParam(absl::Status status, absl::string_view param) {
  status.SetPayload(kParamPayload, absl::Cord(param));
  return status;
}

absl::Status InvalidParam(absl::string_view param, absl::string_view message) {
  return WithParam(absl::InvalidArgumentError(message), param);
}

std::optional<std::string> ParamOf(const absl::Status& status) {
  if (auto payload = status.GetPayload(kParamPayload)) return std::string(*payload);
  if (status.code() != absl::StatusCode::kInvalidArgument) return std::nullopt;
  // Shared validation (server/validation.cc) starts its messages with the field's name.
  std::string_view m(status.message().data(), status.message().size());
  if (m.starts_with("sampling.")) {
    m.remove_prefix(9);
  } else if (m.starts_with("prompt") || m.starts_with("rendered chat prompt")) {
    return m.find("max_tokens") != std::string_view::npos ? "max_tokens" : "prompt";
  }
  size_t n = 0;
  while (n < m.size() && (absl::ascii_isalnum(m[n]) || m[n] == '_' || m[n] == '.' ||
                          m[n] == '[' || m[n] == ']')) {
    ++n;
  }
  if (n == 0) return std::nullopt;
  return std::string(m.substr(0, n));
}

ApiError ToApiError(const absl::Status& status) {
  ApiError e;
  e.message = absl::StrReplaceAll(status.message(), {{"sampling.", ""}});
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      e.http_status = 400;
      e.type = "invalid_request_error";
      e.param = ParamOf(status);
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      e.type = "authentication_error";
      e.code = "invalid_api_key";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "invalid_request_error";
      e.param = ParamOf(status);
      e.code = "model_not_found";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "service_unavailable";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

std::string ErrorJson(const ApiError& error) {
  nlohmann::json j = {{"error",
                       {{"message", error.message},
                        {"type", error.type},
                        {"param", error.param ? nlohmann::json(*error.param) : nullptr},
                        {"code", error.code ? nlohmann::json(*error.code) : nullptr}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace dsv3::server::openai
