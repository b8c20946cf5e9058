// DecodeGraphRunner: the one component that owns whole-step graphs (nano-vllm's pattern). It
// runs a model's steps; decode and speculative verify steps (graph_batch.h) run padded to a few
// batch sizes, each (padded size, tokens per sequence, context bucket) as one graph of the whole
// step (every layer, the final norm and the head) on a backend that captures
// (Backend::step_graphs). Everything else, and every step on other backends, is the model's
// Forward.
//
// A graph step: the batch is padded (PadForGraph: padding rows write only the cache's scratch
// block), the host half of the step (DeepseekV3Model::BeginStep) builds its plan at the
// addresses of its shape, and the device half (RunStep) writes the logits and hidden states of
// every row into buffers the runner owns. The first step of a shape runs eagerly and is
// measured, the next is captured (unless it did host work, such as a cache's first use: then it
// is measured again), later ones replay; the real rows are downloaded after. A capture that
// would pass the backend's graph memory bound leaves its shape eager (over_budget).
//
// Under data-parallel attention (ForwardDataParallel) every rank's runner runs its part of a
// decode step at one shape all ranks share (DataParallelGraphShape), so that the MoE layers'
// collectives, which a graph holds, are the same on every rank.
//
// Graphs read the KV cache, the model's weights and the runner's buffers where they were
// captured: the runner drops them when it sees another cache. One Forward at a time.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/backend.h"
#include "engine/model/forward_batch.h"
#include "engine/model/graph_batch.h"
#include "engine/model/kv_cache.h"
#include "engine/parallel/attention_split.h"

namespace dsv3 {

class DeepseekV3Model;

class DecodeGraphRunner {
 public:
  struct Options {
    // Graphs are captured at GraphBatchSizes(max_sequences) sequences; 0: no graphs.
    int32_t max_sequences = 256;
  };
  struct Stats {
    int64_t eager = 0;     // steps run by Forward (not graph steps, or shapes left eager)
    int64_t measured = 0;  // graph steps run eagerly and measured before their capture
    int64_t captured = 0;  // graphs captured (each then replayed at once)
    int64_t replayed = 0;  // graph steps replayed after their capture
    int64_t over_budget = 0;  // shapes left eager by the graph memory bound
    int64_t graphs = 0;       // graphs held
    int64_t memory_bytes = 0;  // the backend's graph memory plus the runner's output buffers
  };

  // `model` must outlive the runner.
  explicit DecodeGraphRunner(DeepseekV3Model& model);
  DecodeGraphRunner(DeepseekV3Model& model, Options options);
  ~DecodeGraphRunner();
  DecodeGraphRunner(const DecodeGraphRunner&) = delete;
  DecodeGraphRunner& operator=(const DecodeGraphRunner&) = delete;

  // DeepseekV3Model::Forward's contract, with graphs where they apply (never to a batch with
  // max_rank_tokens set, a data-parallel part: ForwardDataParallel below).
  absl::Status Forward(const ForwardBatch& batch, KvCache& cache, std::vector<float>& logits,
                       MlaMode mla_mode = MlaMode::kAuto, std::vector<float>* hidden = nullptr);

  // Data-parallel attention, on every rank: the shape every rank runs its part of a step at
  // (DataParallelGraphShape over every rank's part, with this runner's batch sizes), or nullopt:
  // every rank runs the step eagerly (also for MlaMode other than kAuto, and with no graph
  // sizes). Every rank's runner must have the same Options and every rank's backend the same
  // kind (on backends that do not capture, even contexts are asked for), so that all get the
  // same answer from the same step.
  std::optional<GraphStepShape> DataParallelShape(std::span<const AttentionRankPart> parts,
                                                  MlaMode mla_mode) const;
  // Data-parallel attention: this rank's part of a step at `shape` = DataParallelShape(every
  // rank's part); `batch` may be empty (an idle rank runs B padding sequences, for the
  // collectives) and its max_rank_tokens must be shape.rows(), the MoE layers' capacity on every
  // rank. A graph step on a backend that captures (the logits of batch.logits_rows, and with
  // `hidden` the hidden states of batch.hidden_rows, come back as Forward's); elsewhere (the CPU,
  // graphs off) Forward's eager step of `batch` unpadded, whose MoE layers take the same capacity
  // (spare rows change no result).
  absl::Status ForwardDataParallel(const ForwardBatch& batch, const GraphStepShape& shape,
                                   KvCache& cache, std::vector<float>& logits,
                                   std::vector<float>* hidden = nullptr);

  Stats stats() const;
  // Frees every graph (the next graph steps measure and capture again).
  void DropGraphs();

 private:
  struct Key {
    GraphStepShape shape;
    bool with_hidden = false;
    uint64_t plan_epoch = 0;
    // ForwardBatch::max_rank_tokens, the MoE layers' capacity under data-parallel attention (a
    // graph holds its collectives' sizes); -1 otherwise.
    int32_t max_rank_tokens = -1;
    auto operator<=>(const Key&) const = default;
  };
  struct Entry {
    StepGraphCapture::GraphId graph = -1;  // >= 0 once captured
    bool clean = false;       // the last measured run did no host work: capture next time
    bool eager_only = false;  // its capture would pass the graph memory bound
    int64_t temporaries_bytes = 0;
  };

  absl::Status RunGraphStep(StepGraphCapture& capture, const ForwardBatch& batch,
                            const GraphStepShape& shape, KvCache& cache,
                            std::vector<float>& logits, std::vector<float>* hidden);
  // The output buffers, made at the first graph step: [max rows, V] and [max rows, H] F32.
  void EnsureOutputs();

  DeepseekV3Model& model_;
  const std::vector<int32_t> sizes_;  // GraphBatchSizes(options.max_sequences)
  std::map<Key, Entry> graphs_;
  const void* cache_ = nullptr;  // the cache the graphs write (its first layer's address)
  Tensor logits_out_, hidden_out_;
  Stats stats_;
};

}  // namespace dsv3
