// The daemon's lifecycle: listen first (health NOT_SERVING, calls get UNAVAILABLE), load the
// model, serve, and on a signal drain: stop admitting, let calls in flight finish within the
// grace period, abort the rest, shut down.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/inference_service.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/openai_http.h"
#include "server/server_flags.h"
#include "engine/model_group.h"
#include "server/serving_state.h"

namespace dsv3::server {

class Server {
 public:
  // Binds the gRPC and metrics ports and starts answering (health NOT_SERVING).
  // `model_name`: the served model name, every metric's model_name label (ServedModelNames).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options,
                                                       const std::string& model_name);
  ~Server();

  // Loads the model from `model_dir` through `group` and starts serving (health SERVING).
  // Blocks while loading. `group` must outlive the server.
  absl::Status LoadAndServe(const std::string& model_dir, ModelGroup& group);
  // The model group broke (a tensor-parallel rank died): health NOT_SERVING, no new calls.
  // Calls in flight end with UNAVAILABLE as the engine's steps fail.
  void MarkBroken();
  // Graceful shutdown; returns when every call has ended. Calls in flight may finish within
  // `grace`, or until `stop_now` (if given) is notified; the rest end with UNAVAILABLE.
  // Idempotent; nothing to do after a failed Start (the destructor of a server that Start gave
  // up on runs it too).
  void Drain(absl::Duration grace, const absl::Notification* stop_now = nullptr);

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_http_ ? metrics_http_->port() : 0; }
  int http_port() const { return http_ ? http_->port() : 0; }

 private:
  Server(const ServerOptions& options, const std::string& model_name);
  void SetHealth(bool serving);
  std::string RenderMetrics() const;

  const ServerOptions options_;
  std::unique_ptr<LoadedModel> model_;  // outlives everything that serves it
  ServerMetrics metrics_;
  LoadProgress load_progress_;  // fed by the weight load, read by /metrics
  std::unique_ptr<ServingState> state_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<openai::OpenAiHttpServer> http_;  // --http-listen
  std::unique_ptr<grpc::Server> grpc_server_;
  int grpc_port_ = 0;
  bool drained_ = false;
};

}  // namespace dsv3::server
