// dsv3-server-load: keeps N streams busy against a running dsv3-server for a while and reports
// time to first token (p50/p99), output tokens per second and errors, as one JSON line on stdout
// (bench/server/run.sh turns it into docs/perf/server.md). The streams are gRPC Generate calls,
// or with --http the same requests as streamed POST /v1/completions (server-sent events), so
// that the two front ends can be compared on one workload.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "dsv3/v1/inference.grpc.pb.h"
#include "fmt/format.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string server = "127.0.0.1:50051";
  int streams = 64;
  double duration_s = 30;
  int max_tokens = 64;
  int prompt_tokens = 32;
  std::string http;  // HOST:PORT of --http-listen: use the HTTP API instead of gRPC
};

struct Totals {
  absl::Mutex mu;
  std::vector<double> ttft_s;
  int64_t tokens = 0;
  int64_t requests = 0;
  int64_t errors = 0;
  std::string first_error;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

// A prompt of its own for every request, so that the prefix cache does not turn the benchmark
// into a cache benchmark.
std::vector<int32_t> Prompt(uint64_t& state, int tokens, int64_t vocab) {
  std::vector<int32_t> ids;
  for (int i = 0; i < tokens; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    ids.push_back(static_cast<int32_t>((state >> 33) % vocab));
  }
  return ids;
}

void Record(Totals& totals, double ttft, int64_t tokens, const std::string& error) {
  absl::MutexLock lock(&totals.mu);
  ++totals.requests;
  totals.tokens += tokens;
  if (ttft >= 0) totals.ttft_s.push_back(ttft);
  if (!error.empty() && totals.errors++ == 0) totals.first_error = error;
}

// The HTTP client loop: streamed completions; the first event is the first token's, and the
// usage event counts the tokens.
void HttpWorker(int index, const Options& o, int64_t vocab, Clock::time_point end,
                Totals& totals) {
  const size_t colon = o.http.rfind(':');
  httplib::Client client(o.http.substr(0, colon), std::stoi(o.http.substr(colon + 1)));
  client.set_read_timeout(120);
  client.set_tcp_nodelay(true);  // as curl and the OpenAI SDKs do
  client.set_keep_alive(true);  // as SDK clients do: one connection per stream, reused
  uint64_t state = 0x9E3779B97F4A7C15ull * (index + 1);
  while (Clock::now() < end) {
    const nlohmann::json body = {{"prompt", Prompt(state, o.prompt_tokens, vocab)},
                                 {"max_tokens", o.max_tokens},
                                 {"temperature", 0},
                                 {"ignore_eos", true},
                                 {"stream", true},
                                 {"stream_options", {{"include_usage", true}}}};
    httplib::Request request;
    request.method = "POST";
    request.path = "/v1/completions";
    request.body = body.dump();
    request.set_header("Content-Type", "application/json");
    const Clock::time_point start = Clock::now();
    double ttft = -1;
    int64_t tokens = 0;
    std::string pending;
    request.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (ttft < 0) ttft = std::chrono::duration<double>(Clock::now() - start).count();
      pending.append(data, n);
      for (size_t eol; (eol = pending.find("\n\n")) != std::string::npos;
           pending.erase(0, eol + 2)) {
        const std::string event = pending.substr(0, eol);
        if (event.rfind("data: {", 0) != 0) continue;
        const nlohmann::json chunk = nlohmann::json::parse(event.substr(6), nullptr, false);
        if (chunk.contains("usage") && chunk["usage"].is_object()) {
          tokens = chunk["usage"].value("completion_tokens", 0);
        }
      }
      return true;
    };
    const httplib::Result result = client.send(request);
    std::string error;
    if (!result) {
      error = "http: " + httplib::to_string(result.error());
    } else if (result->status != 200) {
      error = fmt::format("{}: {}", result->status, result->body);
    }
    Record(totals, ttft, tokens, error);
  }
}

// The gRPC client loop: request after request until the deadline.
void Worker(int index, const Options& o, int64_t vocab, dsv3::v1::Inference::Stub& stub,
            Clock::time_point end, Totals& totals) {
  uint64_t state = 0x9E3779B97F4A7C15ull * (index + 1);
  while (Clock::now() < end) {
    dsv3::v1::GenerateRequest request;
    for (int32_t id : Prompt(state, o.prompt_tokens, vocab)) {
      request.mutable_token_ids()->add_ids(id);
    }
    request.mutable_sampling()->set_max_tokens(o.max_tokens);
    request.mutable_sampling()->set_temperature(0);
    request.mutable_sampling()->set_ignore_eos(true);
    request.set_return_text(false);
    grpc::ClientContext context;
    const Clock::time_point start = Clock::now();
    auto reader = stub.Generate(&context, request);
    dsv3::v1::GenerateResponse response;
    double ttft = -1;
    int64_t tokens = 0;
    while (reader->Read(&response)) {
      if (ttft < 0 && response.token_ids_size() > 0) {
        ttft = std::chrono::duration<double>(Clock::now() - start).count();
      }
      tokens += response.token_ids_size();
    }
    const grpc::Status status = reader->Finish();
    Record(totals, ttft, tokens,
           status.ok() ? std::string()
                       : fmt::format("{}: {}", static_cast<int>(status.error_code()),
                                     status.error_message()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"dsv3-server-load: concurrent Generate streams against a running dsv3-server"};
  app.add_option("--server", o.server, "HOST:PORT");
  app.add_option("--streams", o.streams, "concurrent streams")->check(CLI::PositiveNumber);
  app.add_option("--duration-s", o.duration_s, "how long to keep them busy");
  app.add_option("--max-tokens", o.max_tokens, "output tokens per request");
  app.add_option("--prompt-tokens", o.prompt_tokens, "prompt tokens per request");
  app.add_option("--http", o.http,
                 "HOST:PORT of the server's --http-listen: stream POST /v1/completions there "
                 "instead of gRPC Generate (--server is still used for GetModelInfo)");
  CLI11_PARSE(app, argc, argv);

  // One channel per stream: like independent clients, and no single HTTP/2 connection limit.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<dsv3::v1::Inference::Stub>> stubs;
  for (int i = 0; i < o.streams; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", i);  // distinct arguments: distinct connections
    channels.push_back(
        grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args));
    stubs.push_back(dsv3::v1::Inference::NewStub(channels.back()));
  }
  dsv3::v1::ModelInfo info;
  {
    grpc::ClientContext context;
    const grpc::Status st = stubs[0]->GetModelInfo(&context, {}, &info);
    if (!st.ok()) {
      std::fprintf(stderr, "GetModelInfo: %s\n", st.error_message().c_str());
      return 1;
    }
  }
  Totals totals;
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = start + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(o.duration_s));
  std::vector<std::thread> threads;
  for (int i = 0; i < o.streams; ++i) {
    if (o.http.empty()) {
      threads.emplace_back(Worker, i, std::cref(o), info.architecture().vocab_size(),
                           std::ref(*stubs[i]), end, std::ref(totals));
    } else {
      threads.emplace_back(HttpWorker, i, std::cref(o), info.architecture().vocab_size(), end,
                           std::ref(totals));
    }
  }
  for (std::thread& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  absl::MutexLock lock(&totals.mu);
  std::printf(
      "{\"protocol\": \"%s\", \"streams\": %d, \"elapsed_s\": %.1f, \"requests\": %lld, \"errors\": %lld, "
      "\"output_tokens\": %lld, \"tokens_per_s\": %.1f, \"ttft_p50_ms\": %.1f, "
      "\"ttft_p99_ms\": %.1f, \"first_error\": \"%s\"}\n",
      o.http.empty() ? "grpc" : "http", o.streams, elapsed, static_cast<long long>(totals.requests),
      static_cast<long long>(totals.errors), static_cast<long long>(totals.tokens),
      totals.tokens / elapsed, Percentile(totals.ttft_s, 0.5) * 1e3,
      Percentile(totals.ttft_s, 0.99) * 1e3, totals.first_error.c_str());
  return totals.errors == 0 ? 0 : 1;
}
