#include "engine/engine.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/kv_sizing.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model.h"
#include "engine/model_runner.h"
#include "engine/sampling/stop_checker.h"
#include "engine/scheduler/data_parallel_scheduler.h"
#include "engine/speculator.h"
#include "engine/tokenizer/detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/util/log_format.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

absl::Status EngineConfig::Validate() const {
  if (block_size < 1) return absl::InvalidArgumentError("block_size must be >= 1");
  if (num_kv_blocks < 0) return absl::InvalidArgumentError("num_kv_blocks must be >= 0");
  if (kv_memory_bytes < 0) return absl::InvalidArgumentError("kv_memory_bytes must be >= 0");
  if (gpu_memory_utilization < 0 || gpu_memory_utilization > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gpu-memory-utilization must be in (0, 1], got ", gpu_memory_utilization));
  }
  if (num_kv_blocks == 0 && kv_memory_bytes == 0 && gpu_memory_utilization == 0) {
    return absl::InvalidArgumentError(
        "no KV cache size: set num_kv_blocks, kv_memory_bytes or gpu_memory_utilization");
  }
  if (graph_memory_bytes < 0) return absl::InvalidArgumentError("graph_memory_bytes must be >= 0");
  if (max_model_len < 0) return absl::InvalidArgumentError("max_model_len must be >= 0");
  if (max_queued_requests < 1) return absl::InvalidArgumentError("max_queued_requests must be >= 1");
  if (max_queued_tokens < 1) return absl::InvalidArgumentError("max_queued_tokens must be >= 1");
  if (stream_queue_capacity < 1) {
    return absl::InvalidArgumentError("stream_queue_capacity must be >= 1");
  }
  return scheduler.Validate();
}

namespace {

std::vector<int32_t> EosIds(const ModelConfig& config) {
  return std::vector<int32_t>(config.eos_token_ids.begin(), config.eos_token_ids.end());
}

}  // namespace

// Everything the engine keeps for one request between Submit and its last delta.
struct ActiveRequest {
  ActiveRequest(int64_t id, EngineRequest req, std::shared_ptr<RequestStream> stream, uint64_t seed,
                std::vector<int32_t> eos_ids, const Tokenizer* tokenizer, MonotonicTime arrival)
      : id(id),
        request(std::move(req)),
        stream(std::move(stream)),
        sampling_state(seed, request.prompt_ids),
        stop(request.sampling, std::move(eos_ids)),
        timeline(arrival) {
    if (tokenizer != nullptr && request.detokenize) {
      detokenizer = std::make_unique<IncrementalDetokenizer>(*tokenizer,
                                                             request.skip_special_tokens);
    }
  }

  int64_t id;
  EngineRequest request;
  std::shared_ptr<RequestStream> stream;
  SequenceSamplingState sampling_state;
  StopChecker stop;
  std::unique_ptr<IncrementalDetokenizer> detokenizer;
  RequestTimeline timeline;
  int32_t cached_tokens = -1;  // known when first scheduled
  int32_t num_output = 0;
  bool queued = true;  // counts towards the queue limits until first scheduled or ended
};

class Engine::Impl {
 public:
  Impl(ModelRunner& runner, const Tokenizer* tokenizer, const EngineConfig& config,
       int32_t num_blocks, int64_t max_context)
      : runner_(runner),
        max_context_(max_context),
        model_(runner.model()),
        tokenizer_(tokenizer),
        config_(config),
        scheduler_(config.scheduler, runner.attention_ranks(), num_blocks, config.block_size),
        sampler_(EosIds(runner.model().config())) {
    if (config.scheduler.speculative_tokens > 0) {
      speculator_ =
          std::make_unique<Speculator>(runner, sampler_, config.scheduler.speculative_tokens);
    }
    request_histograms_ = RequestHistograms(max_context_);
    stats_.kv_blocks_total = scheduler_.pool_stats().num_blocks;  // every attention rank's
    stats_.kv_blocks_free = stats_.kv_blocks_total;
    stats_.gpu_memory = MeasureGpuMemory(runner_);
    has_gpu_memory_ = stats_.gpu_memory.has_value();
    gpu_memory_measured_at_ = MonotonicClock::now();
    thread_ = std::thread([this] { Loop(); });
  }

  ~Impl() { Shutdown(); }

  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(EngineRequest request) {
    if (auto s = request.sampling.Validate(); !s.ok()) return s;
    const int64_t vocab = model_.config().vocab_size;
    const int64_t n = static_cast<int64_t>(request.prompt_ids.size());
    if (n == 0) return absl::InvalidArgumentError("prompt is empty");
    for (size_t i = 0; i < request.prompt_ids.size(); ++i) {
      const int32_t id = request.prompt_ids[i];
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " is ", id,
                                                       ", outside the vocabulary [0, ", vocab, ")"));
      }
    }
    for (int32_t id : request.sampling.stop_token_ids) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("stop_token_ids: ", id, " is outside the vocabulary [0, ", vocab, ")"));
      }
    }
    if (n + request.sampling.max_tokens > max_context_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt (", n, " tokens) plus max_tokens (", request.sampling.max_tokens,
          ") exceeds the context limit of ", max_context_, " tokens (--max-model-len)"));
    }
    if (!request.sampling.stop.empty() && tokenizer_ == nullptr) {
      return absl::FailedPreconditionError("stop strings need a tokenizer; none is loaded");
    }
    const uint64_t seed = request.sampling.seed.value_or(SequenceSamplingState::RandomSeed());
    const MonotonicTime arrival = request.arrival.value_or(MonotonicClock::now());

    absl::MutexLock lock(&mu_);
    if (!broken_.ok()) return broken_;
    if (stopping_) return absl::FailedPreconditionError("the engine is shutting down");
    // A request the engine thread has not yet scheduled counts as queued even when a running
    // slot is free for it; in a burst none has been scheduled yet. So the queue limit applies
    // beyond the free running slots: running + queued may reach max_running_seqs +
    // max_queued_requests whatever the timing (issue 19, bug 6).
    const int64_t free_slots =
        std::max<int64_t>(0, config_.scheduler.max_running_seqs - started_requests_);
    if (queued_requests_ >= config_.max_queued_requests + free_slots) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many queued requests (limit ", config_.max_queued_requests,
          ", --max-queued-requests, beyond ", config_.scheduler.max_running_seqs,
          " running, --max-running-seqs); retry later"));
    }
    if (queued_tokens_ + n > config_.max_queued_tokens) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many queued prompt tokens (limit ", config_.max_queued_tokens,
          ", --max-queued-tokens); retry later"));
    }
    const int64_t id = next_id_++;
    auto stream = std::make_shared<RequestStream>(id, config_.stream_queue_capacity);
    incoming_.push_back(std::make_unique<ActiveRequest>(
        id, std::move(request), stream, seed, EosIds(model_.config()), tokenizer_, arrival));
    ++queued_requests_;
    queued_tokens_ += n;
    return stream;
  }

  void Abort(int64_t id) {
    absl::MutexLock lock(&mu_);
    aborts_.push_back(id);
  }

  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ && !thread_.joinable()) return;
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  EngineStats Stats() const {
    absl::MutexLock lock(&mu_);
    EngineStats s = stats_;
    s.queued_requests = queued_requests_;
    return s;
  }

  const EngineConfig& config() const { return config_; }
  int64_t max_context() const { return max_context_; }

 private:
  // Takes what arrived since the last step. Returns false when the engine must stop.
  bool TakeInput(std::vector<std::unique_ptr<ActiveRequest>>& incoming,
                 std::vector<int64_t>& aborts) {
    absl::MutexLock lock(&mu_);
    const auto has_input = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return stopping_ || !incoming_.empty() || !aborts_.empty();
    };
    if (!scheduler_.HasWork()) mu_.Await(absl::Condition(&has_input));
    for (auto& r : incoming_) incoming.push_back(std::move(r));
    incoming_.clear();
    aborts.swap(aborts_);
    return !stopping_;
  }

  void Loop() {
    std::vector<float> logits;
    while (true) {
      std::vector<std::unique_ptr<ActiveRequest>> incoming;
      std::vector<int64_t> aborts;
      const bool running = TakeInput(incoming, aborts);
      for (auto& r : incoming) Admit(std::move(r));
      for (int64_t id : aborts) End(id, FinishReason::kAbort, "");
      if (!running) {
        std::vector<int64_t> ids;
        for (const auto& [id, r] : active_) ids.push_back(id);
        for (int64_t id : ids) End(id, FinishReason::kAbort, "");
      } else {
        Step(logits);
      }
      // Final deltas go out only after the stats that account for them: a consumer that sees
      // its request end also sees its blocks returned.
      PublishStats();
      for (auto& [stream, delta] : final_deltas_) stream->Push(std::move(delta));
      final_deltas_.clear();
      if (!running) return;
    }
  }

  void Admit(std::unique_ptr<ActiveRequest> r) {
    const int64_t id = r->id;
    const auto& prompt = r->request.prompt_ids;
    absl::Status s = scheduler_.AddSequence(id, prompt, r->request.sampling.max_tokens);
    active_[id] = std::move(r);
    if (!s.ok()) {
      End(id, FinishReason::kError, std::string(s.message()), absl::StatusCode::kInvalidArgument);
    }
  }

  // The sampling side of request `id` for the speculator; empty once the request is gone.
  DraftRequest LookupRequest(SequenceId id) {
    auto it = active_.find(id);
    if (it == active_.end()) return {};
    return {&it->second->request.sampling, &it->second->sampling_state};
  }

  // Ends every request with UNAVAILABLE after a failed model step: the model group broke (a
  // tensor-parallel rank died or timed out), no request can go on and none will be admitted.
  void Break(const absl::Status& s) {
    spdlog::error("model step failed: {}", std::string(s.message()));
    const std::string error = "model group unavailable: " + std::string(s.message());
    {
      absl::MutexLock lock(&mu_);
      broken_ = absl::UnavailableError(error);
    }
    std::vector<int64_t> ids;
    for (const auto& [id, r] : active_) ids.push_back(id);
    for (int64_t id : ids) End(id, FinishReason::kError, error, absl::StatusCode::kUnavailable);
  }

  void Step(std::vector<float>& logits) {
    StepPlan plan = scheduler_.Schedule();
    if (plan.empty()) return;
    const MonotonicTime scheduled_at = MonotonicClock::now();
    const auto lookup = [this](SequenceId id) { return LookupRequest(id); };
    if (speculator_) {
      for (SequenceId id : plan.preempted) speculator_->Forget(id);
      if (absl::Status s = speculator_->Draft(plan, lookup); !s.ok()) return Break(s);
    }
    ForwardBatch batch = plan.ToForwardBatch();
    std::vector<float>* hidden = nullptr;
    if (speculator_) {
      // Every row's final hidden state: the MTP module runs at each kept position.
      batch.hidden_rows.resize(batch.num_tokens());
      for (int32_t i = 0; i < batch.num_tokens(); ++i) batch.hidden_rows[i] = i;
      hidden = &hidden_;
    }
    if (absl::Status s = runner_.Execute(batch, logits, MlaMode::kAuto, hidden); !s.ok()) {
      return Break(s);
    }
    ++steps_;

    const int64_t vocab = model_.config().vocab_size;
    std::vector<std::vector<int32_t>> emitted;
    std::vector<std::pair<ActiveRequest*, std::vector<SampledToken>>> outputs;
    size_t row = 0;
    for (const ScheduledSequence& entry : plan.sequences) {
      auto it = active_.find(entry.id);
      ActiveRequest* r = it == active_.end() ? nullptr : it->second.get();
      if (r != nullptr && r->cached_tokens < 0) {
        r->cached_tokens = entry.context_begin;
        r->timeline.Scheduled(scheduled_at);
        Dequeue(*r);
      }
      if (!entry.sample) continue;
      const int64_t rows = 1 + entry.num_drafts;
      const absl::Span<const float> entry_logits =
          absl::MakeConstSpan(logits).subspan(row * vocab, rows * vocab);
      row += rows;
      if (r == nullptr) {
        emitted.push_back({0});  // aborted during the step; CommitStep skips it
        continue;
      }
      std::vector<SampledToken> tokens;
      if (speculator_) {
        tokens = speculator_->Verify(entry, entry_logits, r->request.sampling, r->sampling_state);
      } else {
        tokens.push_back(sampler_.Sample(entry_logits, r->request.sampling, r->sampling_state));
      }
      std::vector<int32_t>& ids = emitted.emplace_back();
      for (const SampledToken& t : tokens) ids.push_back(t.token);
      outputs.emplace_back(r, std::move(tokens));
    }
    scheduler_.CommitStep(plan, emitted);
    if (speculator_) {
      if (absl::Status s = speculator_->Extend(plan, batch, hidden_, scheduler_, lookup);
          !s.ok()) {
        return Break(s);
      }
    }
    // One time point for everything the step emits (vLLM's engine-core timestamp): the
    // inter-token latency is per step, not per token.
    const MonotonicTime emitted_at = MonotonicClock::now();
    for (auto& [r, tokens] : outputs) {
      r->timeline.TokensEmitted(emitted_at, request_histograms_);
      // In order; a stop condition ends the request and drops the tokens after it.
      for (const SampledToken& t : tokens) {
        if (Emit(*r, t, emitted_at)) break;
      }
    }
  }

  // Sends one new token of `r`, emitted by the step at `now`, and ends the request when a stop
  // condition is met; returns true then (`r` is gone).
  bool Emit(ActiveRequest& r, const SampledToken& t, MonotonicTime now) {
    ++r.num_output;
    ++generated_tokens_;
    std::string text = r.detokenizer ? r.detokenizer->Push(t.token) : std::string();
    StopUpdate update = r.stop.Append(t.token, text);
    OutputDelta delta;
    delta.token_ids.push_back(t.token);
    delta.text = std::move(update.text);
    if (r.request.sampling.logprobs > 0) {
      delta.logprobs.push_back(t.logprob);
      delta.top_logprobs.push_back(t.top_logprobs);
    }
    if (!update.finished()) {
      r.stream->Push(std::move(delta));
      return false;
    }
    if (update.reason != StopReason::kStopString && r.detokenizer) {
      delta.text += r.detokenizer->Flush();  // bytes of an unfinished character, if any
    }
    const FinishReason reason =
        update.reason == StopReason::kMaxTokens ? FinishReason::kLength : FinishReason::kStop;
    Finish(r, reason, "", std::move(delta), now);
    (void)scheduler_.Finish(r.id);
    if (speculator_) speculator_->Forget(r.id);
    active_.erase(r.id);
    return true;
  }

  // Ends request `id` (abort or error) if it is still active.
  void End(int64_t id, FinishReason reason, const std::string& error,
           absl::StatusCode code = absl::StatusCode::kInternal) {
    auto it = active_.find(id);
    if (it == active_.end()) return;
    (void)scheduler_.Abort(id);
    if (speculator_) speculator_->Forget(id);
    OutputDelta delta;
    if (reason == FinishReason::kError) delta.error_code = code;
    Finish(*it->second, reason, error, std::move(delta), MonotonicClock::now());
    active_.erase(it);
  }

  // A request stops counting towards the queue limits once it runs (or ends while waiting);
  // from its first step until it ends it counts as started.
  void Dequeue(ActiveRequest& r) {
    if (!r.queued) return;
    r.queued = false;
    absl::MutexLock lock(&mu_);
    --queued_requests_;
    queued_tokens_ -= static_cast<int64_t>(r.request.prompt_ids.size());
    if (r.cached_tokens >= 0) ++started_requests_;
  }

  // Fills the final fields of `delta` and pushes it; the request ended at `end`.
  void Finish(ActiveRequest& r, FinishReason reason, const std::string& error, OutputDelta delta,
              MonotonicTime end) {
    if (r.queued) {
      Dequeue(r);
    } else {
      absl::MutexLock lock(&mu_);
      --started_requests_;
    }
    delta.finish_reason = reason;
    delta.error = error;
    delta.prompt_tokens = static_cast<int32_t>(r.request.prompt_ids.size());
    delta.completion_tokens = r.num_output;
    delta.cached_tokens = std::max(r.cached_tokens, 0);
    const RequestLatency latency =
        r.timeline.Ended(end, delta.prompt_tokens, r.num_output, request_histograms_);
    delta.time_to_first_token_s = latency.time_to_first_token_s;
    delta.time_per_output_token_s = latency.time_per_output_token_s;
    prompt_tokens_ += delta.prompt_tokens;
    ++finished_requests_[static_cast<int>(reason)];
    if (reason == FinishReason::kError) {
      LogEvent(spdlog::level::warn, "request failed",
               {{"request_id", r.request.request_id}, {"error", error}});
    }
    final_deltas_.emplace_back(r.stream, std::move(delta));
  }

  void PublishStats() {
    const BlockPoolStats pool = scheduler_.pool_stats();
    const SchedulerStats sched = scheduler_.stats();
    // Asking the driver costs more than the rest of this together: at most once a second, and
    // never on a backend that had none to report at start.
    std::optional<GpuMemoryByUse> gpu_memory;
    const MonotonicTime now = MonotonicClock::now();
    if (has_gpu_memory_ && now - gpu_memory_measured_at_ >= std::chrono::seconds(1)) {
      gpu_memory = MeasureGpuMemory(runner_);
      gpu_memory_measured_at_ = now;
    }
    absl::MutexLock lock(&mu_);
    if (gpu_memory) stats_.gpu_memory = gpu_memory;
    stats_.running_sequences = sched.num_running;
    stats_.kv_blocks_total = pool.num_blocks;
    stats_.kv_blocks_used = pool.num_used;
    stats_.kv_blocks_free = pool.num_free + pool.num_evictable;
    stats_.kv_blocks_cached = pool.num_cached;
    stats_.prefix_cache_queries = pool.prefix_queried_blocks;
    stats_.prefix_cache_hits = pool.prefix_hit_blocks;
    stats_.preemptions = sched.num_preemptions;
    stats_.generated_tokens = generated_tokens_;
    stats_.prompt_tokens = prompt_tokens_;
    stats_.finished_requests = finished_requests_;
    stats_.steps = steps_;
    stats_.requests = request_histograms_;  // a few hundred counters: cheap once a step
    if (speculator_) {
      stats_.spec_proposed = speculator_->stats().proposed;
      stats_.spec_accepted = speculator_->stats().accepted;
    }
  }

  ModelRunner& runner_;
  const int64_t max_context_;
  DeepseekV3Model& model_;
  const Tokenizer* tokenizer_;
  const EngineConfig config_;

  // Engine-thread state. One scheduler and block pool per attention rank (one without
  // --dp-attention).
  DataParallelScheduler scheduler_;
  Sampler sampler_;
  std::unique_ptr<Speculator> speculator_;  // when speculative_tokens > 0
  std::vector<float> hidden_;  // [rows, H]: the step's final hidden states, for the speculator
  absl::flat_hash_map<int64_t, std::unique_ptr<ActiveRequest>> active_;
  // Last deltas of the requests that ended in this iteration, pushed after PublishStats.
  std::vector<std::pair<std::shared_ptr<RequestStream>, OutputDelta>> final_deltas_;
  int64_t generated_tokens_ = 0, prompt_tokens_ = 0, steps_ = 0;
  std::array<int64_t, kNumFinishReasons> finished_requests_{};
  RequestHistograms request_histograms_{0};  // token buckets sized once max_context_ is known
  bool has_gpu_memory_ = false;  // the backend reports device memory (stats_.gpu_memory)
  MonotonicTime gpu_memory_measured_at_;

  // Shared with submitting threads.
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<ActiveRequest>> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> aborts_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);  // Unavailable once the model group broke
  int32_t queued_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t started_requests_ ABSL_GUARDED_BY(mu_) = 0;  // scheduled at least once, not ended
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(DeepseekV3Model& model,
                                                       const Tokenizer* tokenizer,
                                                       const EngineConfig& config) {
  std::unique_ptr<ModelRunner> runner = MakeLocalModelRunner(model);
  auto engine = Create(*runner, tokenizer, config);
  if (!engine.ok()) return engine.status();
  (*engine)->owned_runner_ = std::move(runner);
  return engine;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(ModelRunner& runner,
                                                       const Tokenizer* tokenizer,
                                                       const EngineConfig& config) {
  if (auto s = config.Validate(); !s.ok()) return s;
  DeepseekV3Model& model = runner.model();
  const ModelConfig& mc = model.config();
  const bool mtp = config.scheduler.speculative_tokens > 0;
  if (mtp && !model.has_mtp()) {
    return absl::InvalidArgumentError(
        "speculative_tokens > 0 needs the MTP module, and the checkpoint has none");
  }
  const int64_t num_layers = mc.num_hidden_layers + (mtp ? 1 : 0);
  int64_t num_blocks = config.num_kv_blocks;
  GpuMemoryUse gpu;
  if (num_blocks == 0 && config.kv_memory_bytes > 0) {
    const int64_t bytes_per_token =
        KvCache::BytesPerBlock(mc, 1, model.backend().kv_cache_dtype(), mtp) / num_layers;
    auto blocks = NumBlocksForBudget(config.kv_memory_bytes, config.block_size, num_layers,
                                     bytes_per_token);
    if (!blocks.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(KvSizingFlag(config), ": ", blocks.status().message()));
    }
    num_blocks = *blocks;
  } else if (num_blocks == 0) {
    auto blocks = KvBlocksForGpuMemory(runner, config, mtp, &gpu);
    if (!blocks.ok()) return blocks.status();
    num_blocks = *blocks;
  }
  if (num_blocks > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--num-kv-blocks ", num_blocks, " is too large for a block id (at most 2^31 - 1)"));
  }
  std::string warning;
  auto max_context = ResolveMaxModelLen(config, mc.max_position_embeddings,
                                        num_blocks * config.block_size, &warning);
  if (!max_context.ok()) return max_context.status();
  if (!warning.empty()) spdlog::warn("{}", warning);
  if (absl::Status s = runner.AllocateCache(num_blocks, config.block_size, mtp); !s.ok()) {
    return s;
  }
  const int64_t kv_bytes =
      num_blocks * KvCache::BytesPerBlock(mc, config.block_size, model.backend().kv_cache_dtype(), mtp);
  if (const std::optional<GpuMemoryByUse> memory = MeasureGpuMemory(runner)) {
    // What the share set aside for later (sized by --gpu-memory-utilization), then what the
    // process holds now, by use.
    const std::string budget =
        gpu.total > 0
            ? absl::StrFormat(
                  "%s allows %.2f GiB, keeping %.2f GiB for peak activations and %.2f GiB for "
                  "CUDA graphs (--cuda-graph-memory-mb)",
                  KvSizingFlag(config), config.gpu_memory_utilization * gpu.total / double(1 << 30),
                  gpu.activation_peak / double(1 << 30), gpu.graph_reserve / double(1 << 30))
            : absl::StrCat("KV cache by ", KvSizingFlag(config));
    spdlog::info("device memory per rank, {}; {}", budget, DescribeGpuMemory(*memory));
  }
  spdlog::info("engine: KV cache of {} blocks of {} tokens ({} tokens, {:.2f} GiB, from {}){}; "
               "context limit {} tokens (--max-model-len)",
               num_blocks, config.block_size, num_blocks * config.block_size,
               kv_bytes / double(1 << 30), KvSizingFlag(config),
               runner.attention_ranks() > 1
                   ? absl::StrCat(" on each of ", runner.attention_ranks(), " attention ranks")
                   : "",
               *max_context);
  return std::unique_ptr<Engine>(
      new Engine(nullptr, std::make_unique<Impl>(runner, tokenizer, config,
                                                 static_cast<int32_t>(num_blocks), *max_context)));
}

Engine::Engine(std::unique_ptr<ModelRunner> owned_runner, std::unique_ptr<Impl> impl)
    : owned_runner_(std::move(owned_runner)), impl_(std::move(impl)) {}
Engine::~Engine() { Shutdown(); }

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::Submit(EngineRequest request) {
  return impl_->Submit(std::move(request));
}
void Engine::Abort(int64_t id) { impl_->Abort(id); }
void Engine::Shutdown() { impl_->Shutdown(); }
EngineStats Engine::Stats() const { return impl_->Stats(); }
const EngineConfig& Engine::config() const { return impl_->config(); }
int64_t Engine::max_context() const { return impl_->max_context(); }

}  // namespace dsv3
