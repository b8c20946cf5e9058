#include "server/server.h"

#include <fstream>
#include <sstream>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/exposure_flags.h"
#include "server/load_metrics.h"
#include "server/model_loader.h"
#include "server/tls_check.h"
#include "spdlog/spdlog.h"

namespace dsv3::server {
namespace {

constexpr char kServiceName[] = "dsv3.v1.Inference";
// How long Drain waits, after aborting the streams left at the end of the grace period, for
// them to write their last events (as long as the gRPC server's own shutdown deadline).
constexpr absl::Duration kAbortedStreamsFlush = absl::Seconds(2);

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert.empty()) return grpc::InsecureServerCredentials();
  TlsPem pem;
  for (auto [path, flag, out] : {std::tuple(&o.tls_cert, "--tls-cert", &pem.cert_chain),
                                 std::tuple(&o.tls_key, "--tls-key", &pem.key),
                                 std::tuple(&o.tls_client_ca, "--tls-client-ca", &pem.client_ca)}) {
    if (path->empty()) continue;
    auto text = ReadFile(*path, flag);
    if (!text.ok()) return text.status();
    *out = *std::move(text);
  }
  if (absl::Status st = CheckTlsPem(pem, o.tls_cert, o.tls_key, o.tls_client_ca); !st.ok()) {
    return st;
  }
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({pem.key, pem.cert_chain});
  if (!o.tls_client_ca.empty()) {
    ssl.pem_root_certs = pem.client_ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

Server::Server(const ServerOptions& options, const std::string& model_name)
    : options_(options), metrics_(model_name) {}

Server::~Server() { Drain(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options,
                                                      const std::string& model_name) {
  std::unique_ptr<Server> s(new Server(options, model_name));
  std::vector<std::string> keys = options.api_keys;
  if (!options.api_key_file.empty()) {
    auto file_keys = ApiKeyAuth::ReadKeyFile(options.api_key_file);
    if (!file_keys.ok()) {
      return absl::Status(file_keys.status().code(),
                          absl::StrCat("--api-key-file: ", file_keys.status().message()));
    }
    keys.insert(keys.end(), file_keys->begin(), file_keys->end());
  }
  if (!keys.empty()) spdlog::info("API keys required ({} configured)", keys.size());
  auto exposure = ResolveExposure(options, !keys.empty());
  if (!exposure.ok()) return exposure.status();
  s->state_ = std::make_unique<ServingState>(s->metrics_, ApiKeyAuth(std::move(keys)));
  s->state_->set_max_in_flight(static_cast<int64_t>(options.max_running_seqs) +
                               options.max_queued_requests);
  s->service_ = std::make_unique<InferenceService>(*s->state_);

  if (!options.metrics_listen.empty()) {
    auto hp = SplitHostPort(options.metrics_listen);
    if (!hp.ok()) return hp.status();
    s->metrics_http_ = std::make_unique<MetricsHttpServer>(
        [raw = s.get()] { return raw->RenderMetrics(); },
        exposure->metrics_need_key ? &s->state_->auth() : nullptr);
    if (absl::Status st = s->metrics_http_->Start(hp->first, hp->second); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("--metrics-listen: ", st.message()));
    }
  }

  if (!options.http_listen.empty()) {
    auto hp = SplitHostPort(options.http_listen);
    if (!hp.ok()) return hp.status();
    s->http_ = std::make_unique<openai::OpenAiHttpServer>(
        *s->state_, openai::HttpOptions{.threads = options.http_threads,
                                        .max_body_bytes = size_t{1} * options.max_message_mb << 20});
    if (absl::Status st = s->http_->Start(hp->first, hp->second); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("--http-listen: ", st.message()));
    }
  }

  auto credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!exposure->reflection) builder.SetOption(WithoutReflection());
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
  // gRPC binds with SO_REUSEPORT by default: a second daemon on the same port would start and
  // take half of the new connections. Without it, the second one fails to bind and exits.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  s->grpc_server_ = builder.BuildAndStart();
  if (s->grpc_server_ == nullptr || s->grpc_port_ == 0) {
    // gRPC does not say why; with the TLS material checked above, the address is the cause.
    return absl::UnavailableError(absl::StrCat("--listen: cannot listen on ", options.listen,
                                               ": the port is in use or the address is not one "
                                               "of this host's"));
  }
  s->SetHealth(false);
  spdlog::info(
      "listening on {} (port {}, {}), metrics on {}{}, reflection {}, OpenAI HTTP API on {}",
      options.listen, s->grpc_port_,
      options.tls_client_ca.empty() ? (options.tls_cert.empty() ? "plaintext" : "TLS")
                                    : "mutual TLS",
      s->metrics_http_ ? absl::StrCat("port ", s->metrics_port()) : "nothing",
      s->metrics_http_ && exposure->metrics_need_key ? " (API key required)" : "",
      exposure->reflection ? "on" : "off",
      s->http_ ? absl::StrCat("port ", s->http_port()) : "nothing");
  return s;
}

void Server::SetHealth(bool serving) {
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  health->SetServingStatus(serving);  // the server as a whole ("")
  health->SetServingStatus(kServiceName, serving);
}

absl::Status Server::LoadAndServe(const std::string& model_dir, ModelGroup& group) {
  const absl::Time start = absl::Now();
  auto loaded = LoadModel(options_, model_dir, group, &load_progress_);
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

void Server::Drain(absl::Duration grace, const absl::Notification* stop_now) {
  // Without a gRPC server, Start failed part-way: nothing was admitted, so nothing to drain
  // (the metrics endpoint, if it started, stops in its own destructor).
  if (drained_ || grpc_server_ == nullptr) return;
  drained_ = true;
  state_->StartDraining();
  SetHealth(false);
  const absl::Time deadline = absl::Now() + grace;
  int64_t active = metrics_.active_streams();
  if (active > 0) {
    spdlog::info("draining: waiting up to {} for {} streams", absl::FormatDuration(grace), active);
  }
  auto stopping_now = [stop_now] { return stop_now != nullptr && stop_now->HasBeenNotified(); };
  // Waits until no stream is open, `until` passes or a second signal comes; the streams left.
  auto wait_for_streams = [&](absl::Time until) {
    int64_t open = 0;
    while ((open = metrics_.active_streams()) > 0 && absl::Now() < until && !stopping_now()) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return open;
  };
  active = wait_for_streams(deadline);
  if (active > 0) {
    spdlog::warn("{}: aborting {} streams", stopping_now() ? "stopping now" : "grace period over",
                 active);
  }
  // Aborting in the engine ends the remaining streams (UNAVAILABLE); the server's own shutdown
  // deadline then cancels anything still open.
  if (model_) model_->engine->Shutdown();
  // The aborted streams still write their last events (the error and SSE's [DONE]): stopping
  // the HTTP server first would cut them off (httplib stops calling a chunked response's
  // provider once it is stopping). Bounded, so that a client that stopped reading cannot hold
  // the exit.
  wait_for_streams(absl::Now() + kAbortedStreamsFlush);
  grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  // The engine ended every HTTP request above, so its handlers return promptly.
  if (http_) http_->Stop();
  if (metrics_http_) metrics_http_->Stop();
  spdlog::info("stopped");
}

std::string Server::RenderMetrics() const {
  // Through the state, not model_: this runs on the HTTP thread while the model may be loading.
  const LoadedModel* model = state_->loaded();
  std::string out;
  if (model == nullptr) {
    out = metrics_.Render(nullptr);
  } else {
    const EngineStats stats = model->engine->Stats();
    out = metrics_.Render(&stats);
  }
  MetricsWriter writer(out, metrics_.model_name());
  RenderLoadMetrics(load_progress_.Get(), writer);
  return out;
}

}  // namespace dsv3::server
