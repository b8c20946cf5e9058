// dsv3-client: calls a dsv3-server from the terminal.
//
//   dsv3-client --server HOST:PORT --prompt "text" | --prompt-ids 1,2,3 [--chat] [sampling flags]
//   dsv3-client --server HOST:PORT --health | --model-info
//
// Output streams to stdout as it arrives: the text (--prompt), the generated ids separated by
// spaces (--prompt-ids), or for --chat the reasoning, the answer and any tool calls, each
// under its own heading. On an error: "error: <CODE>: <message>" on stderr and exit status 1.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "dsv3/v1/inference.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace {

struct Options {
  std::string server = "127.0.0.1:50051";
  std::string prompt;
  std::string prompt_ids;
  bool chat = false;
  std::string system;
  std::string chat_template = "v3";
  int max_new_tokens = 64;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty,
      frequency_penalty;
  std::optional<int> top_k, min_tokens;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::string stop_token_ids;
  bool ignore_eos = false;
  int logprobs = 0;
  bool health = false;
  bool model_info = false;
  double timeout_s = 0;
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
  std::string api_key;
};

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}

int Fail(const grpc::Status& status) {
  std::cout.flush();
  std::fprintf(stderr, "error: %s: %s\n", CodeName(status.error_code()),
               status.error_message().c_str());
  return 1;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "error: INVALID_ARGUMENT: %s\n", message.c_str());
  return 2;
}

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::optional<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) return std::nullopt;
    ids.push_back(id);
  }
  return ids;
}

void Prepare(const Options& o, grpc::ClientContext& context) {
  if (!o.api_key.empty()) context.AddMetadata("authorization", "Bearer " + o.api_key);
  if (o.timeout_s > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  }
}

bool FillSampling(const Options& o, dsv3::v1::SamplingParameters& s) {
  s.set_max_tokens(o.max_new_tokens);
  if (o.temperature) s.set_temperature(*o.temperature);
  if (o.top_p) s.set_top_p(*o.top_p);
  if (o.top_k) s.set_top_k(*o.top_k);
  if (o.min_p) s.set_min_p(*o.min_p);
  if (o.repetition_penalty) s.set_repetition_penalty(*o.repetition_penalty);
  if (o.presence_penalty) s.set_presence_penalty(*o.presence_penalty);
  if (o.frequency_penalty) s.set_frequency_penalty(*o.frequency_penalty);
  if (o.min_tokens) s.set_min_tokens(*o.min_tokens);
  if (o.seed) s.set_seed(*o.seed);
  for (const std::string& stop : o.stop) s.add_stop(stop);
  if (!o.stop_token_ids.empty()) {
    auto ids = ParseIds(o.stop_token_ids);
    if (!ids) return false;
    for (int32_t id : *ids) s.add_stop_token_ids(id);
  }
  s.set_ignore_eos(o.ignore_eos);
  s.set_logprobs(o.logprobs);
  return true;
}

int Health(const Options& o, const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  Prepare(o, context);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, {}, &response);
  if (!status.ok()) return Fail(status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 3;
}

int ModelInfo(const Options& o, dsv3::v1::Inference::Stub& stub) {
  grpc::ClientContext context;
  Prepare(o, context);
  dsv3::v1::ModelInfo info;
  const grpc::Status status = stub.GetModelInfo(&context, {}, &info);
  if (!status.ok()) return Fail(status);
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  print.preserve_proto_field_names = true;
  print.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(info, &json, print);
  std::cout << json;
  return 0;
}

int Generate(const Options& o, dsv3::v1::Inference::Stub& stub) {
  dsv3::v1::GenerateRequest request;
  const bool ids_mode = !o.prompt_ids.empty();
  if (ids_mode) {
    auto ids = ParseIds(o.prompt_ids);
    if (!ids) return UsageError("--prompt-ids: expected comma-separated integers");
    for (int32_t id : *ids) request.mutable_token_ids()->add_ids(id);
    request.set_return_text(false);
  } else {
    request.set_text(o.prompt);
  }
  if (!FillSampling(o, *request.mutable_sampling())) {
    return UsageError("--stop-token-ids: expected comma-separated integers");
  }
  grpc::ClientContext context;
  Prepare(o, context);
  auto reader = stub.Generate(&context, request);
  dsv3::v1::GenerateResponse response;
  bool first = true;
  while (reader->Read(&response)) {
    if (ids_mode) {
      for (int32_t id : response.token_ids()) {
        std::cout << (first ? "" : " ") << id;
        first = false;
      }
    } else {
      std::cout << response.text();
    }
    std::cout.flush();
  }
  std::cout << "\n";
  const grpc::Status status = reader->Finish();
  return status.ok() ? 0 : Fail(status);
}

int Chat(const Options& o, dsv3::v1::Inference::Stub& stub) {
  dsv3::v1::ChatRequest request;
  if (!o.system.empty()) {
    auto* m = request.add_messages();
    m->set_role("system");
    m->set_content(o.system);
  }
  auto* m = request.add_messages();
  m->set_role("user");
  m->set_content(o.prompt);
  request.set_template_(o.chat_template == "r1" ? dsv3::v1::CHAT_TEMPLATE_R1
                                                : dsv3::v1::CHAT_TEMPLATE_V3);
  if (!FillSampling(o, *request.mutable_sampling())) {
    return UsageError("--stop-token-ids: expected comma-separated integers");
  }
  grpc::ClientContext context;
  Prepare(o, context);
  auto reader = stub.Chat(&context, request);
  dsv3::v1::ChatResponse response;
  enum { kNone, kReasoning, kContent } section = kNone;
  while (reader->Read(&response)) {
    if (!response.reasoning_content().empty()) {
      if (section != kReasoning) std::cout << (section == kNone ? "" : "\n") << "[reasoning]\n";
      section = kReasoning;
      std::cout << response.reasoning_content();
    }
    if (!response.content().empty()) {
      if (section != kContent) std::cout << (section == kNone ? "" : "\n") << "[answer]\n";
      section = kContent;
      std::cout << response.content();
    }
    for (const auto& call : response.tool_calls()) {
      std::cout << "\n[tool call] " << call.name() << "(" << call.arguments() << ")";
    }
    std::cout.flush();
  }
  std::cout << "\n";
  const grpc::Status status = reader->Finish();
  return status.ok() ? 0 : Fail(status);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"dsv3-client: streams generations from a dsv3-server"};
  app.add_option("--server", o.server, "HOST:PORT")->capture_default_str();
  auto* prompt = app.add_option("--prompt", o.prompt, "prompt text (or the user turn with --chat)");
  auto* ids = app.add_option("--prompt-ids", o.prompt_ids, "prompt token ids, e.g. 1,2,3");
  prompt->excludes(ids);
  app.add_flag("--chat", o.chat, "send --prompt as a chat user message");
  app.add_option("--system", o.system, "system message (with --chat)");
  app.add_option("--template", o.chat_template, "chat template: v3 or r1")
      ->check(CLI::IsMember({"v3", "r1"}));
  app.add_option("--max-new-tokens", o.max_new_tokens, "output tokens at most")
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "0: greedy");
  app.add_option("--top-p", o.top_p);
  app.add_option("--top-k", o.top_k);
  app.add_option("--min-p", o.min_p);
  app.add_option("--repetition-penalty", o.repetition_penalty);
  app.add_option("--presence-penalty", o.presence_penalty);
  app.add_option("--frequency-penalty", o.frequency_penalty);
  app.add_option("--min-tokens", o.min_tokens);
  app.add_option("--seed", o.seed);
  app.add_option("--stop", o.stop, "stop string (repeatable)");
  app.add_option("--stop-token-ids", o.stop_token_ids, "e.g. 1,2");
  app.add_flag("--ignore-eos", o.ignore_eos);
  app.add_option("--logprobs", o.logprobs, "alternatives per token");
  app.add_flag("--health", o.health, "print the server's health (grpc.health.v1)");
  app.add_flag("--model-info", o.model_info, "print GetModelInfo as JSON");
  app.add_option("--timeout-s", o.timeout_s, "call deadline in seconds (0: none)");
  app.add_flag("--tls", o.tls, "TLS with the system's roots (implied by --tls-ca)");
  app.add_option("--tls-ca", o.tls_ca, "CA certificate (PEM) to verify the server with");
  app.add_option("--tls-cert", o.tls_cert, "client certificate (PEM), for mutual TLS");
  app.add_option("--tls-key", o.tls_key, "client private key (PEM), for mutual TLS");
  app.add_option("--tls-server-name", o.tls_server_name, "name to verify the certificate against");
  app.add_option("--api-key", o.api_key, "sent as 'authorization: Bearer <key>'");
  CLI11_PARSE(app, argc, argv);

  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  if (o.tls || !o.tls_ca.empty() || !o.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    for (auto [path, out] :
         {std::pair{&o.tls_ca, &ssl.pem_root_certs}, std::pair{&o.tls_cert, &ssl.pem_cert_chain},
          std::pair{&o.tls_key, &ssl.pem_private_key}}) {
      if (path->empty()) continue;
      auto text = ReadFile(*path);
      if (!text) return UsageError("cannot read " + *path);
      *out = *text;
    }
    credentials = grpc::SslCredentials(ssl);
    if (!o.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(o.tls_server_name);
    }
  }
  auto channel = grpc::CreateCustomChannel(o.server, credentials, args);
  if (o.health) return Health(o, channel);
  auto stub = dsv3::v1::Inference::NewStub(channel);
  if (o.model_info) return ModelInfo(o, *stub);
  if (o.prompt.empty() && o.prompt_ids.empty()) {
    return UsageError("give --prompt, --prompt-ids, --health or --model-info");
  }
  if (o.chat) {
    if (o.prompt.empty()) return UsageError("--chat needs --prompt");
    return Chat(o, *stub);
  }
  return Generate(o, *stub);
}
