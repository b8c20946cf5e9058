#include "server/openai_http.h"

#include <sys/socket.h>

#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "httplib.h"
#include "server/openai_error.h"
#include "server/openai_generation.h"
#include "server/openai_response.h"
#include "server/request_log.h"
#include "spdlog/spdlog.h"

namespace dsv3::server::openai {
namespace {

using json = nlohmann::json;

constexpr absl::Duration kProbeInterval = absl::Seconds(1);
// A non-streamed answer waits this long for the whole output before committing to a 200
// (needed to write the probes that notice a client that left).
constexpr absl::Duration kInlineWait = absl::Seconds(2);

void SendError(httplib::Response& res, const absl::Status& status) {
  const ApiError error = ToApiError(status);
  res.status = error.http_status;
  res.set_content(ErrorJson(error), "application/json");
}

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// The engine's end of a choice as an error for the client; OK for stop and length.
absl::Status ChoiceStatus(const ChoiceOutput& choice) {
  switch (choice.finish()) {
    case FinishReason::kAbort:
      return absl::UnavailableError("the request was aborted: the server is shutting down");
    case FinishReason::kError:
      return absl::InternalError("generation failed: " + choice.error());
    default:
      return absl::OkStatus();
  }
}

bool Empty(const Piece& p) {
  return p.text.empty() && p.reasoning.empty() && p.tool_calls.empty() && p.tokens.empty();
}

// One admitted request, shared by the handler and the response's content provider (which
// httplib runs after the handler returned). Ends the stream's accounting when the last owner
// lets go.
struct Call {
  Call(ServingState& s, const char* m) : state(s), method(m) { state.metrics().StreamStarted(); }
  ~Call() {
    generation.reset();  // aborts what is unfinished
    state.metrics().RecordCall(method, static_cast<grpc::StatusCode>(status.raw_code()));
    state.metrics().StreamEnded();
  }

  // Feeds one (choice, delta) pair; logs a finished choice.
  Piece Push(int index, const OutputDelta& delta) {
    ChoiceOutput& choice = choices[index];
    Piece piece = choice.Push(delta);
    if (delta.finished()) {
      LogFinished(request_id, method, delta);
      if (absl::Status st = ChoiceStatus(choice); !st.ok() && status.ok()) status = st;
    }
    return piece;
  }

  // When the handler got the request, before parsing and tokenization: the start of its
  // latency metrics.
  const MonotonicTime arrival = MonotonicClock::now();
  ServingState& state;
  const char* const method;
  const Tokenizer* tokenizer = nullptr;
  std::string request_id;
  ParsedRequest request;
  ResponseMeta meta;
  std::unique_ptr<Generation> generation;
  std::vector<ChoiceOutput> choices;
  std::vector<bool> started;  // a chunk of the choice was sent
  absl::Status status;        // the first failure, for the metrics and the client
  absl::Time last_write = absl::Now();
  bool failed_sent = false;
};

// The SSE text for what `deltas` add; the end of the stream once every choice finished.
std::string StreamText(Call& call, std::vector<std::pair<int, OutputDelta>> deltas) {
  std::string out;
  const ParsedRequest& r = call.request;
  const std::optional<json> usage_slot =
      r.include_usage ? std::optional<json>(json(nullptr)) : std::nullopt;
  for (auto& [index, delta] : deltas) {
    const Piece piece = call.Push(index, delta);
    if (call.failed_sent) continue;
    const ChoiceOutput& choice = call.choices[index];
    if (!ChoiceStatus(choice).ok()) {
      // OpenAI's SDKs raise an error event as an APIError.
      absl::StrAppend(&out, "data: ", ErrorJson(ToApiError(call.status)), "\n\n");
      call.failed_sent = true;
      call.generation->Abort();
      continue;
    }
    const bool last = choice.finished();
    if (Empty(piece) && call.started[index] && !last) continue;
    json choices = json::array({ChunkChoice(r, call.tokenizer, choice, piece,
                                            !call.started[index], last)});
    call.started[index] = true;
    absl::StrAppend(&out, "data: ", Dump(Chunk(r, call.meta, std::move(choices), usage_slot)),
                    "\n\n");
  }
  if (call.generation->done()) {
    if (r.include_usage && !call.failed_sent) {
      absl::StrAppend(&out, "data: ",
                      Dump(Chunk(r, call.meta, json::array(), UsageJson(call.choices))), "\n\n");
    }
    out += "data: [DONE]\n\n";
  }
  return out;
}

// The whole response once every choice finished.
std::pair<int, std::string> FinalBody(Call& call) {
  if (!call.status.ok()) {
    const ApiError error = ToApiError(call.status);
    return {error.http_status, ErrorJson(error)};
  }
  return {200, Dump(FullResponse(call.request, call.tokenizer, call.meta, call.choices))};
}

void Feed(Call& call, absl::Duration timeout) {
  for (auto& [index, delta] : call.generation->Next(timeout)) call.Push(index, delta);
}

// A chunked response's release: when its last write did not reach the client, the client left,
// so the request ends in the engine (its KV blocks are freed).
std::function<void(bool)> AbortWhenClientLeft(std::shared_ptr<Call> call) {
  return [call = std::move(call)](bool success) {
    if (success) return;
    call->generation->Abort();
    if (call->status.ok()) call->status = absl::CancelledError("the client disconnected");
    LogEvent(spdlog::level::info, "the client disconnected, aborted in the engine",
             {{"request_id", call->request_id}, {"method", call->method}});
  };
}

}  // namespace

OpenAiHttpServer::OpenAiHttpServer(ServingState& state, HttpOptions options)
    : state_(state),
      options_(options),
      started_(absl::ToUnixSeconds(absl::Now())),
      http_(std::make_unique<httplib::Server>()) {
  const int threads = options_.threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Without it a streamed response waits for the peer's delayed ACK (Nagle), ~40 ms per round.
  http_->set_tcp_nodelay(true);
  http_->set_payload_max_length(options_.max_body_bytes);
  // httplib closes a keep-alive connection after 5 requests by default; clients then reconnect
  // all the time, and its listen backlog (5) drops connection bursts (a 1 s SYN retry).
  http_->set_keep_alive_max_count(100000);
  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) { Health(res); });
  http_->Get("/v1/models",
             [this](const httplib::Request& req, httplib::Response& res) { Models(req, res); });
  http_->Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Generate(/*chat=*/true, req, res);
  });
  http_->Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Generate(/*chat=*/false, req, res);
  });
  http_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        // nlohmann::json throws on a value of an unexpected type the parser did not check.
        std::string what = "unexpected error";
        try {
          std::rethrow_exception(ep);
        } catch (const nlohmann::json::exception& e) {
          SendError(res, absl::InvalidArgumentError(
                             absl::StrCat("the request body is malformed: ", e.what())));
          return;
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        SendError(res, absl::InternalError(what));
      });
  http_->set_error_handler(httplib::Server::HandlerWithResponse(
      [max_body_bytes = options_.max_body_bytes](const httplib::Request& req,
                                                 httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    ApiError error = ToApiError(absl::InvalidArgumentError(absl::StrCat(
        "the request body is larger than ", max_body_bytes, " bytes (--max-message-mb)")));
    if (res.status != 413) {
      error.message = absl::StrCat("no endpoint ", req.method, " ", req.path);
      error.param.reset();
      error.code.reset();
    }
    const int status = res.status;
    res.set_content(ErrorJson(error), "application/json");
    res.status = status;
    return httplib::Server::HandlerResponse::Handled;
  }));
}

OpenAiHttpServer::~OpenAiHttpServer() { Stop(); }

absl::Status OpenAiHttpServer::Start(const std::string& host, int port) {
  // httplib listens with a backlog of 5: 64 clients connecting at once overflow it and wait
  // for the kernel's 1 s SYN retry (or give up). Its socket-options hook hands us the listening
  // socket before bind; listen() again afterwards raises the backlog. SO_REUSEADDR as httplib
  // sets it, but not SO_REUSEPORT: a second daemon on the port must fail to bind, as for gRPC.
  int listen_fd = -1;
  http_->set_socket_options([&listen_fd](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = sock;
  });
  port_ = port == 0 ? http_->bind_to_any_port(host) : (http_->bind_to_port(host, port) ? port : -1);
  if (port_ > 0 && listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  if (port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port,
                                               ": the port is in use or the address is not one "
                                               "of this host's"));
  }
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return absl::OkStatus();
}

void OpenAiHttpServer::Stop() {
  if (thread_.joinable()) {
    http_->stop();
    thread_.join();
  }
}

void OpenAiHttpServer::Health(httplib::Response& res) const {
  switch (state_.phase()) {
    case ServingState::Phase::kServing:
      res.set_content(R"({"status":"serving"})", "application/json");
      return;
    case ServingState::Phase::kLoading:
      res.status = 503;
      res.set_content(R"({"status":"loading"})", "application/json");
      return;
    case ServingState::Phase::kDraining:
      res.status = 503;
      res.set_content(R"({"status":"draining"})", "application/json");
      return;
  }
}

namespace {

std::vector<std::pair<std::string_view, std::string_view>> LowerCaseHeaders(
    const httplib::Request& req, std::vector<std::string>& storage) {
  storage.clear();
  for (const auto& [name, value] : req.headers) storage.push_back(absl::AsciiStrToLower(name));
  std::vector<std::pair<std::string_view, std::string_view>> out;
  size_t i = 0;
  for (const auto& [name, value] : req.headers) out.emplace_back(storage[i++], value);
  return out;
}

}  // namespace

void OpenAiHttpServer::Models(const httplib::Request& req, httplib::Response& res) const {
  std::vector<std::string> storage;
  if (grpc::Status st = state_.AdmitHeaders(LowerCaseHeaders(req, storage)); !st.ok()) {
    state_.metrics().RecordCall("Models", st.error_code());
    return SendError(res, FromGrpc(st));
  }
  const LoadedModel& model = state_.model();
  json data = json::array();
  for (const std::string& name : model.defaults.served_names) {
    data.push_back({{"id", name},
                    {"object", "model"},
                    {"created", started_},
                    {"owned_by", "dsv3-serve"},
                    {"max_model_len", model.engine->max_context()}});
  }
  state_.metrics().RecordCall("Models", grpc::StatusCode::OK);
  res.set_content(Dump({{"object", "list"}, {"data", data}}), "application/json");
}

void OpenAiHttpServer::Generate(bool chat, const httplib::Request& req,
                                httplib::Response& res) const {
  auto call = std::make_shared<Call>(state_, chat ? "ChatCompletions" : "Completions");
  auto fail = [&](absl::Status status) {
    call->status = status;
    SendError(res, status);
  };
  std::vector<std::string> storage;
  if (grpc::Status st = state_.AdmitHeaders(LowerCaseHeaders(req, storage)); !st.ok()) {
    return fail(FromGrpc(st));
  }
  auto client_id = ClientRequestId(req.get_header_value("x-request-id"));
  if (!client_id.ok()) {
    return fail(WithParam(absl::InvalidArgumentError(absl::StrReplaceAll(
                              client_id.status().message(), {{"request_id", "x-request-id"}})),
                          "x-request-id"));
  }
  call->request_id = state_.NewRequestId(*client_id);
  res.set_header("x-request-id", call->request_id);

  const LoadedModel& model = state_.model();
  call->tokenizer = model.tokenizer.get();
  auto parsed = ParseRequest(chat ? Endpoint::kChat : Endpoint::kCompletions, req.body,
                             model.limits(), call->tokenizer, model.defaults.served_names);
  if (!parsed.ok()) return fail(parsed.status());
  call->request = *std::move(parsed);
  call->request.request.arrival = call->arrival;
  call->meta = {.id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", call->request_id),
                .created = absl::ToUnixSeconds(absl::Now()),
                .model = call->request.model};
  for (int i = 0; i < call->request.n; ++i) {
    call->choices.emplace_back(call->request, call->tokenizer, call->request_id, i);
  }
  call->started.assign(call->request.n, false);
  auto generation = Generation::Start(state_, call->request, call->request_id);
  if (!generation.ok()) return fail(generation.status());
  call->generation = *std::move(generation);

  if (call->request.stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [call](size_t, httplib::DataSink& sink) {
          std::string out = StreamText(*call, call->generation->Next(kProbeInterval));
          // An SSE comment: clients skip it; a write that fails tells that the client left.
          if (out.empty() && absl::Now() - call->last_write >= kProbeInterval) out = ":\n\n";
          if (!out.empty()) {
            if (!sink.write(out.data(), out.size())) return false;
            call->last_write = absl::Now();
          }
          if (call->generation->done()) sink.done();
          return true;
        },
        AbortWhenClientLeft(call));
    return;
  }

  const absl::Time inline_end = absl::Now() + kInlineWait;
  while (!call->generation->done() && absl::Now() < inline_end) {
    Feed(*call, inline_end - absl::Now());
  }
  if (call->generation->done()) {
    auto [status, body] = FinalBody(*call);
    res.status = status;
    res.set_content(body, "application/json");
    return;
  }
  // Longer answers: 200 is committed; whitespace (insignificant before JSON) probes the client
  // until the body is ready. A failure after this point is sent as the error object.
  res.set_chunked_content_provider(
      "application/json",
      [call](size_t, httplib::DataSink& sink) {
        Feed(*call, kProbeInterval);
        std::string out;
        if (call->generation->done()) {
          out = FinalBody(*call).second;
        } else if (absl::Now() - call->last_write >= kProbeInterval) {
          out = " ";
        }
        if (!out.empty()) {
          if (!sink.write(out.data(), out.size())) return false;
          call->last_write = absl::Now();
        }
        if (call->generation->done()) sink.done();
        return true;
      },
      AbortWhenClientLeft(call));
}

}  // namespace dsv3::server::openai
