// What the daemon answers without credentials, and how much text it tokenizes: the flags, and
// the startup check that turns them (with the API keys and TLS settings) into one decision.
// Default deny where it leaks: with API keys required, reflection is off and /metrics needs a
// key unless the operator says otherwise; under TLS, plain-HTTP metrics stay on loopback.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "grpcpp/impl/server_builder_option.h"
#include "server/server_flags.h"

namespace CLI {
class App;
}

namespace dsv3::server {

// --reflection, --metrics-auth, --metrics-allow-plaintext, --max-tokenize-bytes,
// --allow-special-tokens-in-messages.
void AddExposureFlags(CLI::App& app, ServerOptions& o);

struct Exposure {
  bool reflection = true;         // grpc.reflection answers (without a key: it cannot be gated)
  bool metrics_need_key = false;  // GET /metrics needs an API key
};

// The decision for `o` when `api_keys` are required. InvalidArgument naming the flag when the
// combination cannot be honoured: --metrics-auth key without API keys; a --metrics-listen
// address off this host (plain HTTP) while gRPC uses TLS, without --metrics-allow-plaintext.
absl::StatusOr<Exposure> ResolveExposure(const ServerOptions& o, bool api_keys);

// A ServerBuilder option that drops the reflection plugin: linking grpc++_reflection registers
// it for every builder (a static initializer), so not registering it is not enough.
std::unique_ptr<grpc::ServerBuilderOption> WithoutReflection();

}  // namespace dsv3::server
