// dsv3-server-load: keeps N Generate streams busy against a running dsv3-server for a while and
// reports time to first token (p50/p99), output tokens per second and errors, as one JSON line
// on stdout (bench/server/run.sh turns it into docs/perf/server.md).
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

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string server = "127.0.0.1:50051";
  int streams = 64;
  double duration_s = 30;
  int max_tokens = 64;
  int prompt_tokens = 32;
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

// One client loop: request after request until the deadline, each with its own prompt so that
// the prefix cache does not turn the benchmark into a cache benchmark.
void Worker(int index, const Options& o, int64_t vocab, dsv3::v1::Inference::Stub& stub,
            Clock::time_point end, Totals& totals) {
  uint64_t state = 0x9E3779B97F4A7C15ull * (index + 1);
  for (int round = 0; Clock::now() < end; ++round) {
    dsv3::v1::GenerateRequest request;
    for (int i = 0; i < o.prompt_tokens; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      request.mutable_token_ids()->add_ids(static_cast<int32_t>((state >> 33) % vocab));
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
    absl::MutexLock lock(&totals.mu);
    ++totals.requests;
    totals.tokens += tokens;
    if (ttft >= 0) totals.ttft_s.push_back(ttft);
    if (!status.ok()) {
      if (totals.errors++ == 0) {
        totals.first_error =
            fmt::format("{}: {}", static_cast<int>(status.error_code()), status.error_message());
      }
    }
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
    threads.emplace_back(Worker, i, std::cref(o), info.architecture().vocab_size(),
                         std::ref(*stubs[i]), end, std::ref(totals));
  }
  for (std::thread& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  absl::MutexLock lock(&totals.mu);
  std::printf(
      "{\"streams\": %d, \"elapsed_s\": %.1f, \"requests\": %lld, \"errors\": %lld, "
      "\"output_tokens\": %lld, \"tokens_per_s\": %.1f, \"ttft_p50_ms\": %.1f, "
      "\"ttft_p99_ms\": %.1f, \"first_error\": \"%s\"}\n",
      o.streams, elapsed, static_cast<long long>(totals.requests),
      static_cast<long long>(totals.errors), static_cast<long long>(totals.tokens),
      totals.tokens / elapsed, Percentile(totals.ttft_s, 0.5) * 1e3,
      Percentile(totals.ttft_s, 0.99) * 1e3, totals.first_error.c_str());
  return totals.errors == 0 ? 0 : 1;
}
