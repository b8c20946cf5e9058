// What every call shares: the loaded model and engine (once loading is done), limits, metrics,
// API-key auth, and the server's phase. Calls are admitted only while serving.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "engine/backend/backend.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/server_context.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/serving_defaults.h"
#include "server/stream_pump.h"
#include "server/validation.h"

namespace dsv3::server {

// A loaded model and the engine serving it. Members are destroyed in reverse order: the engine
// (which uses the others) first.
struct LoadedModel {
  std::string model_dir;
  bool is_smoke_model = false;
  int tensor_parallel_size = 1;
  Backend* backend = nullptr;            // owned by the ModelGroup
  DeepseekV3Model* model = nullptr;      // owned by the ModelGroup
  std::unique_ptr<Tokenizer> tokenizer;  // null: token-id requests only
  std::unique_ptr<Engine> engine;
  // Request policy from the flags (ModelLimits says what each means).
  int64_t max_tokenize_bytes = int64_t{1} << 20;
  bool special_tokens_in_messages = false;
  ServingDefaults defaults;     // template, sampling values and names from the checkpoint
  int32_t max_tokens_cap = 0;   // --default-max-tokens

  ModelLimits limits() const {
    return {.vocab_size = model->config().vocab_size,
            .max_context = engine->max_context(),
            .max_tokenize_bytes = max_tokenize_bytes,
            .special_tokens_in_messages = special_tokens_in_messages,
            .chat_template = defaults.chat_template,
            .sampling = defaults.sampling,
            .max_tokens_fill_context = true,
            .max_tokens_cap = max_tokens_cap};
  }
};

class ServingState {
 public:
  enum class Phase { kLoading, kServing, kDraining };

  ServingState(ServerMetrics& metrics, ApiKeyAuth auth)
      : metrics_(metrics), auth_(std::move(auth)), stream_pump_(kStreamPumpThreads) {}

  // Called once, when loading is done; from then on calls are admitted.
  void SetServing(LoadedModel* model);
  // Stops admitting calls (they get UNAVAILABLE); calls in flight go on.
  void StartDraining() { phase_.store(Phase::kDraining); }
  Phase phase() const { return phase_.load(); }

  // For a new Inference call: OK, UNAUTHENTICATED (API key), or UNAVAILABLE (loading or
  // draining). The model is valid when OK.
  grpc::Status Admit(const grpc::CallbackServerContext& context) const;
  // The same for the HTTP front end: (lower-case header name, value) pairs.
  grpc::Status AdmitHeaders(
      const std::vector<std::pair<std::string_view, std::string_view>>& headers) const;

  // Valid once serving started (never unset afterwards).
  LoadedModel& model() const { return *model_.load(std::memory_order_acquire); }
  // Null until serving started.
  LoadedModel* loaded() const { return model_.load(std::memory_order_acquire); }
  ServerMetrics& metrics() const { return metrics_; }
  // Where the gRPC reactors advance their streams when the engine signals output.
  StreamPump& stream_pump() { return stream_pump_; }
  const ApiKeyAuth& auth() const { return auth_; }

  // Streams admitted to the engine and not yet ended. The engine bounds only requests it has not
  // yet handed to its scheduler, so the server bounds the rest: more than `max_in_flight`
  // (running plus queued) get RESOURCE_EXHAUSTED instead of an unbounded wait.
  void set_max_in_flight(int64_t n) { max_in_flight_ = n; }
  bool TryStartStream();
  void EndStream() { in_flight_.fetch_sub(1); }
  int64_t max_in_flight() const { return max_in_flight_; }

  // The client's request id if it sent one, else "r<N>" from a counter.
  std::string NewRequestId(const std::string& client_id);

 private:
  grpc::Status PhaseStatus() const;  // UNAVAILABLE unless serving

  ServerMetrics& metrics_;
  const ApiKeyAuth auth_;
  std::atomic<Phase> phase_{Phase::kLoading};
  std::atomic<LoadedModel*> model_{nullptr};
  std::atomic<int64_t> next_id_{1};
  std::atomic<int64_t> in_flight_{0};
  int64_t max_in_flight_ = INT64_MAX;
  // Enough for 64+ streams advancing every decode step (a pump is ~10-20 us of protobuf and
  // transport work per stream); declared last so that it stops first.
  static constexpr int kStreamPumpThreads = 4;
  StreamPump stream_pump_;
};

}  // namespace dsv3::server
