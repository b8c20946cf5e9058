// The OpenAI-compatible HTTP API (--http-listen), on the same engine, limits, API keys, metrics
// and serving phase as gRPC:
//   POST /v1/chat/completions, POST /v1/completions  (streamed as server-sent events, or whole)
//   GET /v1/models, GET /health (200 serving, 503 loading or draining; no key needed)
// cpp-httplib serves it on its own thread pool; a request holds one thread while it generates
// and waits on its engine streams there, so the engine thread only ever signals. A client that
// disconnects is noticed at the next write (a streamed chunk, or a one-space probe every second
// while a non-streamed answer is pending) and its requests are aborted, freeing their KV blocks.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "server/serving_state.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace dsv3::server::openai {

struct HttpOptions {
  int threads = 256;                  // connections served at once
  size_t max_body_bytes = 16 << 20;   // larger bodies get 413
};

class OpenAiHttpServer {
 public:
  OpenAiHttpServer(ServingState& state, HttpOptions options);
  ~OpenAiHttpServer();  // Stop()

  // Binds `host`:`port` (0: any free port) and serves in the background.
  absl::Status Start(const std::string& host, int port);
  int port() const { return port_; }
  // Stops accepting and waits for the handlers; call after the engine ended its requests.
  void Stop();

 private:
  void Health(httplib::Response& res) const;
  void Models(const httplib::Request& req, httplib::Response& res) const;
  void Generate(bool chat, const httplib::Request& req, httplib::Response& res) const;

  ServingState& state_;
  const HttpOptions options_;
  const int64_t started_;  // Unix seconds: "created" of /v1/models
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace dsv3::server::openai
