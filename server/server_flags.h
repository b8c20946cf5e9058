// dsv3-server's command line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/parallel/parallel_config.h"

namespace dsv3::server {

struct ServerOptions {
  std::string model_dir;      // empty: the embedded demo model
  std::string tokenizer_dir;  // empty: the model directory's tokenizer.json, if any
  std::string listen = "127.0.0.1:50051";
  std::string metrics_listen = "127.0.0.1:9090";  // empty: no metrics endpoint
  std::string http_listen;  // the OpenAI-compatible HTTP API; empty: off
  int http_threads = 256;   // HTTP connections served at once (a stream holds one)
  std::vector<std::string> served_model_names;  // empty: the model directory's name
  std::string chat_template = "auto";           // auto (from the checkpoint), v3 or r1
  int32_t default_max_tokens = 16384;  // cap on an unset max_tokens (the context left); 0: none
  int threads = 0;                                // CPU backend threads; 0: all
  std::string device = "auto";                    // backend: auto, cpu or cuda
  int tp = 1;                   // tensor-parallel ranks (spawned on this host unless RANK is set)
  NodeLaunchFlags node;         // --nnodes, --node-rank, --dist-init-addr: one process per host
  bool dp_attention = false;    // --dp-attention: attention per rank, routed experts split
  double rank_timeout_s = 60;   // a step's longest wait for another rank
  bool custom_all_reduce = false;  // --custom-all-reduce: small GPU all-reduces over peer memory
  std::vector<std::string> argv;  // argv[1..], repeated by spawned workers

  // Engine limits.
  int32_t kv_block_size = 64;
  int64_t num_kv_blocks = 0;
  // KV pool (engine/kv_sizing.h): --num-kv-blocks, else --kv-memory-mb, else (0) the cuda
  // backend's --gpu-memory-utilization, or kCpuKvMemoryMb (engine/kv_sizing.h) on the cpu one.
  int64_t kv_memory_mb = 0;
  double gpu_memory_utilization = 0.9;
  int64_t cuda_graph_memory_mb = 2048;  // CUDA graphs' bound, inside the fraction
  int64_t max_model_len = 0;            // 0: the model's, capped to the KV pool (warning)
  int32_t max_batched_tokens = 8192;
  int32_t max_running_seqs = 256;
  int32_t max_queued_requests = 1024;
  int64_t max_queued_tokens = 1 << 20;
  int32_t stream_queue_capacity = 64;
  bool disable_prefix_cache = false;
  int32_t speculative_tokens = 0;  // MTP drafts per sequence per step; 0: off

  // Transport.
  int max_message_mb = 16;
  int keepalive_time_s = 60;
  int keepalive_timeout_s = 20;
  int max_concurrent_streams = 1024;  // per HTTP/2 connection
  double grace_period_s = 30;         // draining on SIGTERM/SIGINT

  // Security.
  std::string tls_cert;  // PEM; with tls_key enables TLS
  std::string tls_key;
  std::string tls_client_ca;  // PEM CA; requires and verifies client certificates (mTLS)
  std::vector<std::string> api_keys;
  std::string api_key_file;

  // Exposure without credentials and request policy (exposure_flags.h, docs/serving.md).
  std::string reflection = "auto";    // auto (off when API keys are required), on, off
  std::string metrics_auth = "auto";  // auto (the API key when keys are required), key, none
  bool metrics_allow_plaintext = false;  // plain-HTTP metrics off this host under TLS
  int64_t max_tokenize_bytes = int64_t{1} << 20;
  bool allow_special_tokens_in_messages = false;

  std::string log_level = "info";
  std::string log_format = "text";  // text or json (engine/util/log_format.h)
};


// Parses argv. Returns the options, or the exit code to end with (0 after --help, 2 on a usage
// error; CLI11 has printed the message).
struct ParsedFlags {
  std::optional<ServerOptions> options;
  int exit_code = 0;
};
ParsedFlags ParseServerFlags(int argc, char** argv);

// "host:port" or "[v6]:port" split; port 0 is allowed (any free port).
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address);

}  // namespace dsv3::server
