// One HTTP request's generation: its n engine requests (choices), submitted together so that
// they share the prompt's prefix cache, counted against the same in-flight limit and metrics as
// gRPC streams, and aborted together when the client goes away. The HTTP thread that serves the
// request waits here; the engine thread only signals (never blocks).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/openai_request.h"
#include "server/serving_state.h"

namespace dsv3::server::openai {

class Generation {
 public:
  // Submits the request's n choices (choice i with seed + i when a seed is set).
  // ResourceExhausted beyond the in-flight limit or the engine's queues; then nothing stays
  // submitted.
  static absl::StatusOr<std::unique_ptr<Generation>> Start(ServingState& state,
                                                           const ParsedRequest& request,
                                                           const std::string& request_id);
  // Aborts what has not finished, ends the streams' accounting.
  ~Generation();

  // Waits up to `timeout` for output, then takes every delta queued: (choice, delta) pairs.
  std::vector<std::pair<int, OutputDelta>> Next(absl::Duration timeout);
  bool done() const { return finished_ == static_cast<int>(streams_.size()); }
  // Ends every unfinished choice in the engine (the client went away); frees its KV blocks.
  void Abort();

 private:
  struct Signal {
    absl::Mutex mu;
    bool ready ABSL_GUARDED_BY(mu) = false;
  };

  explicit Generation(ServingState& state) : state_(state) {}

  ServingState& state_;
  std::shared_ptr<Signal> signal_ = std::make_shared<Signal>();
  std::vector<std::shared_ptr<RequestStream>> streams_;
  std::vector<bool> stream_done_;
  int finished_ = 0;
  int slots_ = 0;  // streams counted in the state's in-flight limit
};

}  // namespace dsv3::server::openai
