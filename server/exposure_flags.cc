#include "server/exposure_flags.h"

#include <memory>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/impl/server_builder_plugin.h"

namespace dsv3::server {
namespace {

class WithoutReflectionOption : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const auto& p) { return absl::StrContains(p->name(), "reflection"); });
  }
};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

}  // namespace

void AddExposureFlags(CLI::App& app, ServerOptions& o) {
  auto* security = "Security";
  app.add_option("--reflection", o.reflection,
                 "gRPC server reflection: on, off, or auto (off when API keys are required: "
                 "reflection cannot check a key)")
      ->group(security)
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_option("--metrics-auth", o.metrics_auth,
                 "GET /metrics needs an API key (key), or not (none); auto: key when API keys "
                 "are required")
      ->group(security)
      ->check(CLI::IsMember({"auto", "key", "none"}));
  app.add_flag("--metrics-allow-plaintext", o.metrics_allow_plaintext,
               "with TLS, allow --metrics-listen on an address off this host (metrics are plain "
               "HTTP)")
      ->group(security);
  app.add_flag("--allow-special-tokens-in-messages", o.allow_special_tokens_in_messages,
               "chat message text may hold special tokens (\"<｜Assistant｜>\" becomes the "
               "control token); only for trusted clients: by default such text stays text")
      ->group(security);
  app.add_option("--max-tokenize-bytes", o.max_tokenize_bytes,
                 "largest text a request may have tokenized (Tokenize, a text prompt, a chat's "
                 "messages together)")
      ->group("Limits")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
}

absl::StatusOr<Exposure> ResolveExposure(const ServerOptions& o, bool api_keys) {
  Exposure e;
  e.reflection = o.reflection == "on" || (o.reflection == "auto" && !api_keys);
  if (o.metrics_auth == "key" && !api_keys) {
    return absl::InvalidArgumentError(
        "--metrics-auth key: no API keys are configured (--api-key, --api-key-file)");
  }
  e.metrics_need_key = o.metrics_auth == "key" || (o.metrics_auth == "auto" && api_keys);
  if (!o.tls_cert.empty() && !o.metrics_listen.empty() && !o.metrics_allow_plaintext) {
    auto hp = SplitHostPort(o.metrics_listen);
    if (!hp.ok()) return hp.status();
    if (!IsLoopback(hp->first)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--metrics-listen ", o.metrics_listen,
          ": metrics are plain HTTP, reachable off this host, while gRPC uses TLS; bind them to "
          "127.0.0.1, disable them (--metrics-listen ''), or pass --metrics-allow-plaintext"));
    }
  }
  return e;
}

std::unique_ptr<grpc::ServerBuilderOption> WithoutReflection() {
  return std::make_unique<WithoutReflectionOption>();
}

}  // namespace dsv3::server
