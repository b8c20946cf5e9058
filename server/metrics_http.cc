#include "server/metrics_http.h"

#include <map>

#include "httplib.h"

namespace dsv3::server {

MetricsHttpServer::MetricsHttpServer(std::function<std::string()> render,
                                     const ApiKeyAuth* auth)
    : render_(std::move(render)), auth_(auth), http_(std::make_unique<httplib::Server>()) {
  http_->Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    if (auth_ != nullptr) {
      // The gRPC check, on the same two headers (HTTP header names are case-insensitive).
      const std::string authorization = req.get_header_value("Authorization");
      const std::string api_key = req.get_header_value("X-API-Key");
      std::multimap<grpc::string_ref, grpc::string_ref> headers;
      if (req.has_header("Authorization")) headers.emplace("authorization", authorization);
      if (req.has_header("X-API-Key")) headers.emplace("x-api-key", api_key);
      if (const grpc::Status st = auth_->Check(headers); !st.ok()) {
        res.status = 401;
        res.set_header("WWW-Authenticate", "Bearer");
        res.set_content(st.error_message() + "\n", "text/plain; charset=utf-8");
        return;
      }
    }
    res.set_content(render_(), "text/plain; version=0.0.4; charset=utf-8");
  });
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::Status MetricsHttpServer::Start(const std::string& host, int port) {
  port_ = port == 0 ? http_->bind_to_any_port(host) : (http_->bind_to_port(host, port) ? port : -1);
  if (port_ <= 0) {
    return absl::UnavailableError("cannot listen for metrics on " + host + ":" +
                                  std::to_string(port));
  }
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return absl::OkStatus();
}

void MetricsHttpServer::Stop() {
  if (thread_.joinable()) {
    http_->stop();
    thread_.join();
  }
}

}  // namespace dsv3::server
