// API keys: when any are configured, every Inference call must carry one, either as
// "authorization: Bearer <key>" or as "x-api-key: <key>" metadata. The health service is not
// checked (load balancers probe it without credentials). Off when no keys are configured.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "grpcpp/support/string_ref.h"

namespace dsv3::server {

class ApiKeyAuth {
 public:
  ApiKeyAuth() = default;  // disabled
  explicit ApiKeyAuth(std::vector<std::string> keys) : keys_(std::move(keys)) {}

  // Keys from a file, one per line; blank lines and lines starting with '#' are skipped. Fails
  // when the file cannot be read or holds no key.
  static absl::StatusOr<std::vector<std::string>> ReadKeyFile(const std::string& path);

  bool enabled() const { return !keys_.empty(); }

  // OK when disabled or when the metadata carries a configured key; else UNAUTHENTICATED saying
  // what was missing or wrong (never echoing the key).
  grpc::Status Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;

  // The same check over what a transport presented: (lower-case header name, value) pairs, of
  // which "authorization" and "x-api-key" are read (the HTTP front end passes its headers).
  grpc::Status CheckHeaders(
      const std::vector<std::pair<std::string_view, std::string_view>>& headers) const;

 private:
  bool IsKey(std::string_view candidate) const;

  std::vector<std::string> keys_;
};

}  // namespace dsv3::server
