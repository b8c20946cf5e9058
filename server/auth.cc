#include "server/auth.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace dsv3::server {
namespace {

// Compares in time independent of where the strings differ, so that response timing does not
// reveal how much of a guessed key was right.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (b.empty() ? 0 : b[i % b.size()]));
  }
  return diff == 0;
}

std::string_view View(const grpc::string_ref& s) { return std::string_view(s.data(), s.size()); }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ApiKeyAuth::ReadKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot read the API key file " + path);
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(in, line)) {
    const std::string_view key = Trim(line);
    if (key.empty() || key.starts_with('#')) continue;
    keys.emplace_back(key);
  }
  if (keys.empty()) return absl::InvalidArgumentError("the API key file " + path + " holds no key");
  return keys;
}

bool ApiKeyAuth::IsKey(std::string_view candidate) const {
  bool match = false;
  for (const std::string& key : keys_) match |= ConstantTimeEquals(key, candidate);
  return match;
}

grpc::Status ApiKeyAuth::Check(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  if (!enabled()) return grpc::Status::OK;
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  for (const auto& [name, value] : metadata) headers.emplace_back(View(name), View(value));
  return CheckHeaders(headers);
}

grpc::Status ApiKeyAuth::CheckHeaders(
    const std::vector<std::pair<std::string_view, std::string_view>>& headers) const {
  if (!enabled()) return grpc::Status::OK;
  bool presented = false;
  for (const auto& [name, value] : headers) {
    std::string_view candidate;
    if (name == "authorization") {
      const std::string_view v = value;
      if (v.size() < 7 || !absl::EqualsIgnoreCase(absl::string_view(v.data(), 7), "bearer ")) {
        return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                            "the authorization metadata must be 'Bearer <api key>'");
      }
      candidate = Trim(v.substr(7));
    } else if (name == "x-api-key") {
      candidate = Trim(value);
    } else {
      continue;
    }
    presented = true;
    if (IsKey(candidate)) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      presented ? "the API key is not valid"
                                : "this server requires an API key: send 'authorization: Bearer "
                                  "<key>' or 'x-api-key: <key>' metadata");
}

}  // namespace dsv3::server
