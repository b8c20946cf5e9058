// The Prometheus endpoint: GET /metrics on its own port (cpp-httplib, its own threads), so that
// scraping never competes with gRPC for its threads and can be firewalled separately.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "server/auth.h"

namespace httplib {
class Server;
}

namespace dsv3::server {

class MetricsHttpServer {
 public:
  // With `auth` (not owned; outlives the server), GET /metrics needs one of its keys as
  // "Authorization: Bearer <key>" or "X-API-Key: <key>" (401 otherwise).
  explicit MetricsHttpServer(std::function<std::string()> render,
                             const ApiKeyAuth* auth = nullptr);
  ~MetricsHttpServer();  // Stop()

  // Binds `host`:`port` (port 0: any free port) and serves in the background.
  absl::Status Start(const std::string& host, int port);
  int port() const { return port_; }
  void Stop();

 private:
  std::function<std::string()> render_;
  const ApiKeyAuth* auth_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace dsv3::server
