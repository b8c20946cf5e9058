// ModelRunner: how the engine runs one model step, whatever the number of ranks. The engine
// calls Execute with the step's batch and samples from the logits; with tensor parallelism the
// runner on rank 0 first broadcasts the batch (batch_codec) so that every worker runs the same
// Forward on its shard, and the model's collectives meet inside Forward.
//
// The runner owns the KV cache: rank 0 decides its size (AllocateCache) and the workers
// allocate the same geometry, because the block ids in every plan index it.
//
// Ranks > 0 run RunWorker instead of an engine: receive, Forward, repeat, until rank 0 says
// shut down (OK) or disappears (an error; the process should exit non-zero).
//
// Data-parallel attention (a model loaded with dp_attention): the batch holds every attention
// rank's sequences (SequenceSlice::attention_rank); each rank, rank 0 included, runs its own part
// (data_parallel_forward.h) in its own cache of num_blocks blocks, and the logits (and hidden
// states) come back to rank 0 in the batch's order. Speculative decoding's MTP steps
// (ExecuteMtp) reach the workers the same way under either split.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/backend/backend.h"
#include "engine/backend/memory_by_use.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"
#include "engine/parallel/communicator.h"

namespace dsv3 {

class DecodeGraphRunner;
class DeepseekV3Model;

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // Allocates the paged latent cache on every rank, with the MTP module's layer when `mtp_layer`,
  // replacing the one before (KV sizing runs a dummy step on a small cache first,
  // engine/kv_sizing.h). num_blocks 0 releases the cache, and every rank's backend returns its
  // unused pool memory to the driver (Backend::ReleaseCachedMemory).
  virtual absl::Status AllocateCache(int64_t num_blocks, int32_t block_size,
                                     bool mtp_layer = false) = 0;
  // Runs one step: the latents of the new tokens go into the cache, the float32 logits of
  // batch.logits_rows into `logits` ([rows, vocab]) and, with `hidden`, the final hidden states
  // of batch.hidden_rows into it ([rows, hidden]). An error means the group is broken (a rank
  // died or timed out): every later call fails too, and the engine must fail its requests
  // (UNAVAILABLE) and stop.
  virtual absl::Status Execute(const ForwardBatch& batch, std::vector<float>& logits,
                               MlaMode mla_mode = MlaMode::kAuto,
                               std::vector<float>* hidden = nullptr) = 0;
  // Runs the MTP module (DeepseekV3Model::ForwardMtp) on the cache allocated with its layer.
  virtual absl::Status ExecuteMtp(const ForwardBatch& batch, absl::Span<const float> hidden,
                                  std::vector<float>& logits, std::vector<float>& hidden_out) = 0;
  // OK while every rank serves; the first failure after that.
  virtual absl::Status Health() = 0;
  // Tells the workers to exit (they return OK from RunWorker). Idempotent; Execute fails after.
  virtual void Shutdown() = 0;

  virtual DeepseekV3Model& model() = 0;
  virtual int world_size() const = 0;  // tensor-parallel ranks (1: this process alone)
  // Ranks that each run attention for their own sequences, in caches of their own: world_size()
  // under data-parallel attention, else 1 (every rank runs the same batch).
  virtual int attention_ranks() const = 0;
  virtual KvCache& cache() = 0;  // after AllocateCache
  // Device memory this rank's CUDA graphs hold (DecodeGraphRunner::Stats::memory_bytes); 0 on
  // backends without graphs. From the thread that runs steps.
  virtual int64_t graph_memory_bytes() = 0;
};

// This rank's device memory by use (engine/backend/memory_by_use.h), after AllocateCache;
// nullopt on a backend without device memory (cpu). From the thread that runs steps.
std::optional<GpuMemoryByUse> MeasureGpuMemory(ModelRunner& runner);

// TP=1: Forward in this process.
std::unique_ptr<ModelRunner> MakeLocalModelRunner(DeepseekV3Model& model);

struct TpLeaderOptions {
  // While no step runs, rank 0 sends a heartbeat (then a barrier) this often, so that workers
  // waiting for the next plan can tell an idle rank 0 from a dead one, and rank 0 notices a
  // dead or hung worker while idle. Keep it well under the communicator's timeout.
  absl::Duration heartbeat_interval = absl::Seconds(10);
  // Called once, from the heartbeat thread or from Execute's caller, when the group breaks.
  std::function<void(const absl::Status&)> on_failure = nullptr;
};

// Rank 0 of a group of world_size > 1. `model` and `comm` must outlive the runner.
std::unique_ptr<ModelRunner> MakeTpLeaderRunner(DeepseekV3Model& model, Communicator& comm,
                                                TpLeaderOptions options);

// The loop of ranks > 0: runs every plan rank 0 broadcasts until kShutdown (returns OK). Returns
// an error when rank 0 disappears or stops sending (no plan or heartbeat within the
// communicator's timeout), when a plan does not fit this rank's model or cache, or when a
// collective fails.
absl::Status RunWorker(DeepseekV3Model& model, Communicator& comm);

}  // namespace dsv3
