// Engine: the serving loop. Thread-safe Submit and Abort from any thread; one engine thread runs
// Scheduler::Schedule -> model Forward -> sampling -> stop checks -> output deltas, step after
// step. Each request gets a RequestStream: a bounded queue of output deltas that the engine
// thread fills and a consumer (a gRPC reactor, dsv3-generate) drains. The engine thread never
// blocks on a consumer: when a stream's queue is full, new output is merged into its last queued
// delta, so memory per request stays bounded by its own output.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/backend/memory_by_use.h"
#include "engine/request_metrics.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_params.h"
#include "engine/scheduler/scheduler.h"

namespace dsv3 {

class DeepseekV3Model;
class ModelRunner;
class Tokenizer;

// The limits name the dsv3-server / dsv3-generate flag that sets each in their errors
// (--max-model-len, --max-queued-requests, ...), so that operators know what to change.
struct EngineConfig {
  int32_t block_size = 64;  // tokens per KV block (--kv-block-size)
  // The KV pool's size (engine/kv_sizing.h), first that applies: num_kv_blocks > 0 blocks
  // (--num-kv-blocks); kv_memory_bytes > 0 bytes (--kv-memory-mb); else what is left of
  // gpu_memory_utilization x the device's memory (--gpu-memory-utilization, GPU backends), after
  // weights, the profiled peak activations and graph_memory_bytes for CUDA graphs
  // (--cuda-graph-memory-mb; the server bounds the graphs to it, Backend::SetGraphMemoryLimit).
  int64_t num_kv_blocks = 0;
  int64_t kv_memory_bytes = 1ll << 30;
  double gpu_memory_utilization = 0;
  int64_t graph_memory_bytes = 0;
  // Longest prompt + output per sequence (--max-model-len); 0: max_position_embeddings capped
  // to what the pool holds, with a warning when capped. Create fails when a set value does not
  // fit either.
  int64_t max_model_len = 0;
  SchedulerConfig scheduler;
  // Requests submitted but not yet scheduled for their first step; Submit beyond: RESOURCE_EXHAUSTED.
  int32_t max_queued_requests = 1024;
  int64_t max_queued_tokens = 1 << 20;  // prompt tokens of those requests; beyond: same
  int32_t stream_queue_capacity = 64;   // deltas per request before merging
  // MTP speculative decoding (scheduler.speculative_tokens = K > 0) needs a model with the MTP
  // module; the KV cache then gets the MTP layer too.

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

struct EngineRequest {
  std::string request_id;  // for logs; the engine assigns its own numeric id
  std::vector<int32_t> prompt_ids;
  SamplingParams sampling;
  bool detokenize = true;  // produce text deltas (ignored when no tokenizer is loaded)
  bool skip_special_tokens = true;
  // When a front end received the request (before tokenizing it), for the latency metrics;
  // unset: when Submit is called.
  std::optional<MonotonicTime> arrival;
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
inline constexpr int kNumFinishReasons = 5;
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "abort", "error"

struct OutputDelta {
  std::vector<int32_t> token_ids;
  std::string text;  // never ends inside a UTF-8 character; stop strings are never included
  std::vector<float> logprobs;                       // one per token, when requested
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // one list per token, when requested
  FinishReason finish_reason = FinishReason::kNone;  // set on the last delta only
  std::string error;                                 // kError: what went wrong
  // kError: kUnavailable when the model group broke (a tensor-parallel rank died), kInternal
  // otherwise.
  absl::StatusCode error_code = absl::StatusCode::kOk;
  // Set on the last delta:
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens served from the prefix cache
  double time_to_first_token_s = 0;    // from the request's arrival
  double time_per_output_token_s = 0;  // mean over the tokens after the first

  bool finished() const { return finish_reason != FinishReason::kNone; }
};

// The consumer side of one request. Thread-safe.
class RequestStream {
 public:
  explicit RequestStream(int64_t id, int32_t capacity) : id_(id), capacity_(capacity) {}
  int64_t id() const { return id_; }

  // The next delta, waiting up to `timeout`; nullopt on timeout. After the delta with a finish
  // reason, returns nullopt at once.
  std::optional<OutputDelta> Next(absl::Duration timeout = absl::InfiniteDuration());
  std::optional<OutputDelta> TryNext() { return Next(absl::ZeroDuration()); }
  // Every delta queued now, merged into one (in order, up to and including a final one); nullopt
  // when none is queued. A consumer that sends one message at a time (a gRPC stream with one
  // write outstanding) sends what accumulated during its last write at once instead of falling
  // behind by a step per write.
  std::optional<OutputDelta> TakeAll();
  // `notify` runs on the engine thread whenever a delta is pushed (keep it short, never block).
  void SetNotify(std::function<void()> notify);

  // Engine side.
  void Push(OutputDelta delta);

 private:
  const int64_t id_;
  const int32_t capacity_;
  absl::Mutex mu_;
  std::deque<OutputDelta> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;  // the final delta was taken
  std::function<void()> notify_ ABSL_GUARDED_BY(mu_);
};

struct EngineStats {
  int32_t queued_requests = 0;  // submitted, not yet scheduled
  int32_t running_sequences = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;    // held by sequences
  int64_t kv_blocks_free = 0;    // free list plus evictable cached blocks
  int64_t kv_blocks_cached = 0;  // in the prefix cache
  int64_t prefix_cache_queries = 0;
  int64_t prefix_cache_hits = 0;
  int64_t preemptions = 0;
  int64_t generated_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t steps = 0;
  // Requests that ended, by how (indexed by FinishReason; kNone stays 0).
  std::array<int64_t, kNumFinishReasons> finished_requests{};
  RequestHistograms requests{0};  // latencies and sizes (engine/request_metrics.h)
  // Speculative decoding, per draft position j < K: drafts verified, and of those accepted.
  std::vector<int64_t> spec_proposed;
  std::vector<int64_t> spec_accepted;
  // Rank 0's device memory by use, refreshed at most once a second while steps run (graphs are
  // captured as new batch shapes come); nullopt on backends without device memory (cpu).
  std::optional<GpuMemoryByUse> gpu_memory;
};

class Engine {
 public:
  // Runs steps through `runner` (one rank, or rank 0 of a tensor-parallel group), which
  // allocates the KV cache here. `runner` (and `tokenizer`, which may be null) must outlive the
  // engine. Starts the engine thread. Fails when the config is invalid or the cache cannot be
  // allocated.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(ModelRunner& runner,
                                                        const Tokenizer* tokenizer,
                                                        const EngineConfig& config);
  // One rank: the engine runs `model` in this process.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(DeepseekV3Model& model,
                                                        const Tokenizer* tokenizer,
                                                        const EngineConfig& config);
  ~Engine();  // Shutdown()

  // Validates (sampling parameters, token ids inside the vocabulary, prompt not empty, prompt +
  // max_tokens within max_context()) and queues the request. InvalidArgument names
  // the problem; ResourceExhausted when the queue limits are reached; FailedPrecondition after
  // Shutdown; Unavailable once the model group has broken.
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(EngineRequest request);
  // Ends the request at its next step boundary with finish reason abort, releasing its blocks.
  // Unknown or finished ids are ignored.
  void Abort(int64_t id);
  // Stops admitting, aborts every request, joins the engine thread. Idempotent.
  void Shutdown();

  EngineStats Stats() const;
  const EngineConfig& config() const;
  int64_t max_context() const;  // longest prompt + output a request may have (max_model_len)

 private:
  class Impl;
  Engine(std::unique_ptr<ModelRunner> owned_runner, std::unique_ptr<Impl> impl);
  std::unique_ptr<ModelRunner> owned_runner_;  // the local runner of Create(model, ...)
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv3
