#include "server/server_flags.h"

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "engine/parallel/node_launch_flags.h"
#include "engine/scheduler/scheduler.h"
#include "server/exposure_flags.h"

namespace dsv3::server {

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError("'" + address + "' is not HOST:PORT");
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return absl::InvalidArgumentError("'" + address + "' has no host");
  return std::make_pair(host, port);
}

ParsedFlags ParseServerFlags(int argc, char** argv) {
  ServerOptions o;
  CLI::App app{
      "dsv3-server: serves a DeepSeek-V3-architecture model over gRPC (dsv3.v1.Inference),\n"
      "with grpc.health.v1, server reflection and Prometheus metrics. Without --model it serves\n"
      "the embedded demo model: a small DeepSeek-V3-architecture model trained on English text."};
  app.option_defaults()->always_capture_default();

  app.add_option("--model", o.model_dir,
                 "model directory (config.json, safetensors, optional tokenizer.json); "
                 "default: the embedded demo model");
  app.add_option("--tokenizer", o.tokenizer_dir,
                 "directory holding tokenizer.json, when the model directory has none");
  app.add_option("--listen", o.listen, "gRPC address HOST:PORT (port 0: any free port)");
  app.add_option("--metrics-listen", o.metrics_listen,
                 "Prometheus /metrics address HOST:PORT; empty: disabled");
  app.add_option("--http-listen", o.http_listen,
                 "OpenAI-compatible HTTP API address HOST:PORT (/v1/chat/completions, "
                 "/v1/completions, /v1/models, /health); empty: off");
  app.add_option("--http-threads", o.http_threads,
                 "HTTP connections served at once; a streaming request holds one")
      ->check(CLI::Range(1, 65536));
  app.add_option("--served-model-name", o.served_model_names,
                 "model name(s) the APIs answer to (repeatable; the first is reported); "
                 "default: the model directory's name")
      ->take_all();
  app.add_option("--chat-template", o.chat_template,
                 "chat template when a request names none: auto (R1 when the checkpoint's "
                 "tokenizer_config.json chat template opens <think>, else V3), v3 or r1")
      ->check(CLI::IsMember({"auto", "v3", "r1"}));
  app.add_option("--default-max-tokens", o.default_max_tokens,
                 "a request without max_tokens may generate up to the context left after its "
                 "prompt, at most this many tokens (0: no cap)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--tp", o.tp,
                 "tensor-parallel ranks in all: spawns --tp - 1 workers on this host (--tp / "
                 "--nnodes - 1 per host with --nnodes; global rank 0 alone serves the APIs); "
                 "with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and LOCAL_RANK) set, ranks "
                 "are launched externally")
      ->check(CLI::Range(1, 64));
  dsv3::AddNodeLaunchFlags(app, o.node);
  app.add_flag("--dp-attention", o.dp_attention,
               "with --tp N: data-parallel attention with expert parallelism; each rank runs "
               "attention for its own requests (its own KV cache, replicated attention, dense "
               "and shared weights) and owns 1/N of the routed experts");
  app.add_option("--rank-timeout-s", o.rank_timeout_s,
                 "seconds a step may wait for another rank before the group counts as broken")
      ->check(CLI::PositiveNumber);
  app.add_flag("--custom-all-reduce", o.custom_all_reduce,
               "cuda backend with --tp: all-reduces of up to 8 MiB (decode steps') read the "
               "peers' memory over NVLink in one kernel instead of NCCL, when every rank is on one "
               "host and its GPUs reach each other (else NCCL, with a warning)");
  app.add_option("--threads", o.threads, "CPU backend threads (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--device", o.device,
                 "backend: auto (cuda when the build has the CUDA backend and a GPU is visible, "
                 "else cpu), cpu, or cuda (GPU LOCAL_RANK, or one GPU per rank with --tp)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--log-format", o.log_format,
                 "stderr log lines: text, or json (one object per line: timestamp, level, "
                 "message, and request_id, method and other fields on request lines)")
      ->check(CLI::IsMember({"text", "json"}));

  auto* limits = "Limits";
  app.add_option("--kv-block-size", o.kv_block_size, "tokens per KV block")
      ->group(limits)
      ->check(CLI::Range(1, 4096));
  app.add_option("--gpu-memory-utilization", o.gpu_memory_utilization,
                 "cuda backend: fraction of the GPU's memory this server may use per rank; the "
                 "KV cache gets what weights, peak activations (profiled at startup) and "
                 "--cuda-graph-memory-mb leave. Does not apply to the cpu backend "
                 "(--kv-memory-mb)")
      ->group(limits)
      ->check(CLI::Range(0.0, 1.0) & CLI::PositiveNumber);
  app.add_option("--cuda-graph-memory-mb", o.cuda_graph_memory_mb,
                 "cuda backend: memory per rank that CUDA graphs may hold, set aside within "
                 "--gpu-memory-utilization; steps that would need more run without graphs")
      ->group(limits)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--num-kv-blocks", o.num_kv_blocks,
                 "KV blocks per rank; overrides --kv-memory-mb and --gpu-memory-utilization "
                 "(0: unset)")
      ->group(limits)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kv-memory-mb", o.kv_memory_mb,
                 "KV cache memory per rank; overrides --gpu-memory-utilization (0: unset: "
                 "--gpu-memory-utilization on cuda, 1024 on cpu)")
      ->group(limits)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-model-len", o.max_model_len,
                 "longest prompt + output per sequence; startup fails when the model or the KV "
                 "cache cannot hold it (0: the model's max_position_embeddings, capped to the "
                 "KV cache with a warning)")
      ->group(limits)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-batched-tokens", o.max_batched_tokens, "new tokens per engine step")
      ->group(limits)
      ->check(CLI::PositiveNumber);
  app.add_option("--max-running-seqs", o.max_running_seqs, "sequences per batch")
      ->group(limits)
      ->check(CLI::PositiveNumber);
  app.add_option("--speculative-tokens", o.speculative_tokens,
                 "MTP speculative decoding: tokens drafted per sequence per step (0: off; the "
                 "model needs the MTP module)")
      ->group(limits)
      ->check(CLI::Range(0, kMaxSpeculativeTokens));
  app.add_option("--max-queued-requests", o.max_queued_requests,
                 "waiting requests before RESOURCE_EXHAUSTED")
      ->group(limits)
      ->check(CLI::PositiveNumber);
  app.add_option("--max-queued-tokens", o.max_queued_tokens,
                 "prompt tokens of waiting requests before RESOURCE_EXHAUSTED")
      ->group(limits)
      ->check(CLI::PositiveNumber);
  app.add_option("--stream-queue", o.stream_queue_capacity,
                 "output deltas buffered per request before they are merged")
      ->group(limits)
      ->check(CLI::PositiveNumber);
  app.add_flag("--disable-prefix-cache", o.disable_prefix_cache, "no prefix caching")
      ->group(limits);
  app.add_option("--max-message-mb", o.max_message_mb, "largest gRPC message, both directions")
      ->group(limits)
      ->check(CLI::Range(1, 1024));
  app.add_option("--keepalive-time-s", o.keepalive_time_s, "HTTP/2 keepalive ping interval")
      ->group(limits)
      ->check(CLI::PositiveNumber);
  app.add_option("--keepalive-timeout-s", o.keepalive_timeout_s,
                 "close a connection whose keepalive ping is not answered within this")
      ->group(limits)
      ->check(CLI::PositiveNumber);
  app.add_option("--max-concurrent-streams", o.max_concurrent_streams,
                 "concurrent calls per connection")
      ->group(limits)
      ->check(CLI::PositiveNumber);
  app.add_option("--grace-period-s", o.grace_period_s,
                 "on SIGTERM/SIGINT, how long in-flight requests may run before they are aborted")
      ->group(limits)
      ->check(CLI::NonNegativeNumber);

  auto* security = "Security";
  app.add_option("--tls-cert", o.tls_cert, "server certificate chain (PEM); enables TLS")
      ->group(security)
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", o.tls_key, "server private key (PEM)")
      ->group(security)
      ->check(CLI::ExistingFile);
  app.add_option("--tls-client-ca", o.tls_client_ca,
                 "CA (PEM) that client certificates must chain to; enables mutual TLS")
      ->group(security)
      ->check(CLI::ExistingFile);
  app.add_option("--api-key", o.api_keys,
                 "accepted API key (repeatable); prefer --api-key-file, argv is visible to ps")
      ->group(security);
  app.add_option("--api-key-file", o.api_key_file, "file of accepted API keys, one per line")
      ->group(security)
      ->check(CLI::ExistingFile);

  AddExposureFlags(app, o);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return {std::nullopt, app.exit(e)};
  }
  o.argv.assign(argv + 1, argv + argc);
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    std::cerr << "--tls-cert and --tls-key go together\n";
    return {std::nullopt, 2};
  }
  if (!o.tls_client_ca.empty() && o.tls_cert.empty()) {
    std::cerr << "--tls-client-ca needs --tls-cert and --tls-key\n";
    return {std::nullopt, 2};
  }
  for (const std::string* address : {&o.listen, &o.metrics_listen, &o.http_listen}) {
    if (address->empty() && address != &o.listen) continue;
    if (auto hp = SplitHostPort(*address); !hp.ok()) {
      std::cerr << hp.status().message() << "\n";
      return {std::nullopt, 2};
    }
  }
  return {std::move(o), 0};
}

}  // namespace dsv3::server
