// StepGraphCapture: what a backend with graphs (CUDA) offers the decode graph runner
// (engine/model/step_graphs.h), which decides what to capture and when. A step's device half
// (DeepseekV3Model::RunStep: every layer, the final norm and the head) is run once eagerly and
// measured, then captured with its temporaries in a capture arena of the measured size, then
// replayed. Everything the captured step reads per step lives at fixed addresses: the step plan
// (built by BeginStep in a workspace whose layout depends only on the step's shape), the KV
// cache, the weights and the runner's output buffers.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dsv3 {

class StepGraphCapture {
 public:
  using GraphId = int64_t;
  virtual ~StepGraphCapture() = default;

  // Brackets an eager run of a step: the most memory its temporaries held at once (as a capture
  // arena places them) and whether it did host work (uploads from pageable memory, host waits,
  // such as a cache's first use), which would make a capture of the same ops invalid.
  struct Measure {
    int64_t temporaries_bytes = 0;
    bool host_work = false;
  };
  virtual void BeginMeasuredRun() = 0;
  virtual Measure EndMeasuredRun() = 0;

  // Records `body` (the same ops as a clean measured run) as a graph whose temporaries come from
  // the capture arena; nothing runs. ResourceExhausted when graph memory would pass the
  // Backend::SetGraphMemoryLimit bound; a failed body (a collective) fails the capture.
  virtual absl::StatusOr<GraphId> Capture(int64_t temporaries_bytes,
                                          absl::FunctionRef<absl::Status()> body) = 0;
  // Replays graph `id` on the backend's queue. `body` is what was captured: a backend that
  // records no graphs (a test double) runs it instead.
  virtual void Launch(GraphId id, absl::FunctionRef<absl::Status()> body) = 0;
  // Frees every graph and the capture arenas (the KV cache or the model they read is going).
  virtual void DropAll() = 0;

  // Graph memory held now: capture arenas, the graph steps' plan workspace, instantiated graphs.
  virtual int64_t memory_bytes() const = 0;
  // Changes whenever the graph steps' plan workspace moves: graphs captured before read the
  // plan at the old addresses and must not be replayed.
  virtual uint64_t plan_epoch() const = 0;
  // Whether decode attention in graph steps at these latent dims (kv_lora_rank + rope) reads
  // only each item's own keys, so that a batch of any mix of contexts costs no padding; when
  // not, the runner graphs only batches even enough for decode by GEMMs (graph_batch.h).
  virtual bool DecodeReadsOwnKeysOnly(int64_t kv_lora_rank, int64_t rope_dim) const {
    return false;
  }
};

}  // namespace dsv3
