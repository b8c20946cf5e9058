#include "server/server.h"

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/model_loader.h"
#include "spdlog/spdlog.h"

namespace dsv3::server {
namespace {

constexpr char kServiceName[] = "dsv3.v1.Inference";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot read " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert.empty()) return grpc::InsecureServerCredentials();
  auto cert = ReadFile(o.tls_cert);
  if (!cert.ok()) return cert.status();
  auto key = ReadFile(o.tls_key);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!o.tls_client_ca.empty()) {
    auto ca = ReadFile(o.tls_client_ca);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

Server::Server(const ServerOptions& options) : options_(options) {}

Server::~Server() { Drain(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  std::unique_ptr<Server> s(new Server(options));
  std::vector<std::string> keys = options.api_keys;
  if (!options.api_key_file.empty()) {
    auto file_keys = ApiKeyAuth::ReadKeyFile(options.api_key_file);
    if (!file_keys.ok()) return file_keys.status();
    keys.insert(keys.end(), file_keys->begin(), file_keys->end());
  }
  if (!keys.empty()) spdlog::info("API keys required ({} configured)", keys.size());
  s->state_ = std::make_unique<ServingState>(s->metrics_, ApiKeyAuth(std::move(keys)));
  s->state_->set_max_in_flight(static_cast<int64_t>(options.max_running_seqs) +
                               options.max_queued_requests);
  s->service_ = std::make_unique<InferenceService>(*s->state_);

  if (!options.metrics_listen.empty()) {
    auto hp = SplitHostPort(options.metrics_listen);
    if (!hp.ok()) return hp.status();
    s->metrics_http_ =
        std::make_unique<MetricsHttpServer>([raw = s.get()] { return raw->RenderMetrics(); });
    if (absl::Status st = s->metrics_http_->Start(hp->first, hp->second); !st.ok()) return st;
  }

  auto credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, *credentials, &s->grpc_port_);
  builder.RegisterService(s->service_.get());
  const int max_bytes = options.max_message_mb << 20;
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, options.keepalive_time_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, options.keepalive_timeout_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Clients may ping as often as we do; more often is answered with GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             std::min(options.keepalive_time_s, 10) * 1000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  s->grpc_server_ = builder.BuildAndStart();
  if (s->grpc_server_ == nullptr || s->grpc_port_ == 0) {
    return absl::UnavailableError("cannot listen on " + options.listen);
  }
  s->SetHealth(false);
  spdlog::info("listening on {} (port {}, {}), metrics on {}", options.listen, s->grpc_port_,
               options.tls_client_ca.empty() ? (options.tls_cert.empty() ? "plaintext" : "TLS")
                                             : "mutual TLS",
               s->metrics_http_ ? absl::StrCat("port ", s->metrics_port()) : "nothing");
  return s;
}

void Server::SetHealth(bool serving) {
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  health->SetServingStatus(serving);  // the server as a whole ("")
  health->SetServingStatus(kServiceName, serving);
}

absl::Status Server::LoadAndServe(const std::string& model_dir, ModelGroup& group) {
  const absl::Time start = absl::Now();
  auto loaded = LoadModel(options_, model_dir, group);
  if (!loaded.ok()) return loaded.status();
  model_ = *std::move(loaded);
  const v1::ModelInfo info = DescribeModel(*model_);
  spdlog::info(
      "loaded {} in {:.1f} s: {} layers, vocab {}, {} KV blocks of {} tokens, context "
      "{}, tokenizer {}{}",
      model_->model_dir, absl::ToDoubleSeconds(absl::Now() - start),
      info.architecture().num_hidden_layers(), info.architecture().vocab_size(),
      info.kv_capacity_blocks(), info.kv_block_size(), info.max_context_tokens(),
      info.has_tokenizer() ? "yes" : "no",
      info.is_smoke_model() ? " [SMOKE MODEL: random weights]" : "");
  state_->SetServing(model_.get());
  if (state_->phase() == ServingState::Phase::kServing) {
    SetHealth(true);
    spdlog::info("serving");
  }
  return absl::OkStatus();
}

void Server::MarkBroken() {
  state_->StartDraining();
  SetHealth(false);
}

void Server::Drain(absl::Duration grace) {
  if (drained_) return;
  drained_ = true;
  state_->StartDraining();
  SetHealth(false);
  const absl::Time deadline = absl::Now() + grace;
  int64_t active = metrics_.active_streams();
  if (active > 0) {
    spdlog::info("draining: waiting up to {} for {} streams", absl::FormatDuration(grace), active);
  }
  while ((active = metrics_.active_streams()) > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (active > 0) spdlog::warn("grace period over: aborting {} streams", active);
  // Aborting in the engine ends the remaining streams (UNAVAILABLE); the server's own shutdown
  // deadline then cancels anything still open.
  if (model_) model_->engine->Shutdown();
  grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (metrics_http_) metrics_http_->Stop();
  spdlog::info("stopped");
}

std::string Server::RenderMetrics() const {
  // Through the state, not model_: this runs on the HTTP thread while the model may be loading.
  const LoadedModel* model = state_->loaded();
  if (model == nullptr) return metrics_.Render(nullptr);
  const EngineStats stats = model->engine->Stats();
  return metrics_.Render(&stats);
}

}  // namespace dsv3::server
