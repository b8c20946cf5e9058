// CUDA graphs for decode steps. A decode layer at batch 1 is ~45 launches of a few microseconds
// each (plus their allocations), so the host, not the GPU, set its pace; a graph replays the
// whole layer with one launch.
//
// How a part (one layer, Backend::RunGraphable) becomes a graph:
// - Only steps of the same small number of new tokens per sequence (decode: 1; speculative
//   verify: K + 1), at most kMaxGraphTokens in all, qualify (their GraphSignature: tokens, tokens
//   per sequence, context bucket, block size, the MoE path threshold). Their plan is
//   built in a per-signature arena, so the positions, slots, block tables and attention items
//   sit at the same addresses in every step of the signature, and decode attention pads every
//   sequence to the context bucket instead of the longest context.
// - The first time a (part, signature) comes, it runs eagerly while the pool counts its
//   allocations; if it did no host work (NoteHostWork: pageable uploads, host waits), the next
//   time it is captured with its temporaries carved from a capture arena of that size, then
//   launched; later times only launch.
// - A graph bakes in every address it saw, so its key holds the part's outside tensors (the
//   residual stream and the layer's cache), the signature and the plan arena.
// - Graph memory (capture arenas, plan arenas, instantiated graphs) is bounded by
//   SetGraphMemoryLimit, the reserve that KV sizing by --gpu-memory-utilization sets aside
//   (--cuda-graph-memory-mb): a part whose capture would pass it stays eager, and a step of a new
//   signature runs without graphs once the limit is reached (a plan arena already made may still
//   grow: the bound is passed by at most one step's plan arrays).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/graph_policy.h"
#include "kernels/launch_check.h"

namespace dsv3 {

namespace {

// Instantiated graphs kept, and step signatures whose plan arena is kept; beyond, the least
// recently used half goes (a graph whose plan arena went is never hit again: a new arena of the
// same signature is a new key, or, at the same address, holds the plan at the same offsets).
constexpr size_t kMaxGraphs = 8192;
constexpr size_t kMaxPlanArenas = 512;

// Erases the less recently used half of `entries` (values with a last_use), calling `drop` on
// each first.
template <typename Map, typename Drop>
void DropOlderHalf(Map& entries, Drop drop) {
  std::vector<uint64_t> uses;
  for (const auto& [key, entry] : entries) uses.push_back(entry.last_use);
  std::nth_element(uses.begin(), uses.begin() + uses.size() / 2, uses.end());
  const uint64_t cutoff = uses[uses.size() / 2];
  std::erase_if(entries, [&](auto& item) {
    if (item.second.last_use >= cutoff) return false;
    drop(item.second);
    return true;
  });
}

}  // namespace

std::optional<CudaBackend::GraphSignature> CudaBackend::GraphSignatureOf(
    const AttentionBatch& batch) const {
  const int64_t t = static_cast<int64_t>(batch.positions.size());
  if (!options_.cuda_graphs || t == 0 || t > kMaxGraphTokens ||
      t > grouped_moe_max_tokens_ || batch.sequences.empty()) {
    return std::nullopt;
  }
  // Decode (one new token per sequence) or verify (K + 1 per sequence): every sequence the same
  // number, each token attending over its own prefix as one item of decode by GEMMs.
  const int32_t per_sequence = batch.sequences.front().num_tokens;
  if (per_sequence < 1 || per_sequence > kAbsorbedMaxNewTokens) return std::nullopt;
  int64_t max_context = 0, total_context = 0;
  for (const auto& seq : batch.sequences) {
    if (seq.num_tokens != per_sequence) return std::nullopt;
    for (int32_t i = 0; i < seq.num_tokens; ++i) {
      const int64_t context = seq.context_begin + i + 1;
      max_context = std::max(max_context, context);
      total_context += context;
    }
  }
  if (!DecodeByGemm(t, total_context, max_context)) return std::nullopt;
  return GraphSignature{t, per_sequence, GraphContextBucket(max_context), batch.block_size,
                        grouped_moe_max_tokens_};
}

ArenaAllocator& CudaBackend::PlanArena(const GraphSignature& sig, int64_t bytes) {
  if (plan_arenas_.size() >= kMaxPlanArenas && !plan_arenas_.contains(sig)) {
    // Freed in stream order: steps already queued still read them first.
    DropOlderHalf(plan_arenas_, [](const PlanArenaSlot&) {});
  }
  PlanArenaSlot& slot = plan_arenas_[sig];
  slot.last_use = ++graph_clock_;
  if (slot.arena == nullptr || slot.arena->size() < bytes) {
    slot.arena.reset();
    slot.memory = Tensor();
    const int64_t size = std::max<int64_t>(2 * bytes, 64 << 10);
    slot.memory = Tensor(allocator_.get(), DType::kU8, {size});
    slot.arena = std::make_unique<ArenaAllocator>(slot.memory.view().data, size, Device::kCuda);
  }
  slot.arena->Reset();
  graph_plan_base_ = slot.memory.view().data;
  return *slot.arena;
}

void CudaBackend::NoteHostWork(const char* what) {
  if (capturing_) {
    std::fprintf(stderr, "CUDA graph capture: %s inside a captured part\n", what);
    std::abort();
  }
  if (part_running_) part_host_work_ = true;
}

absl::Status CudaBackend::RunGraphable(const GraphPartKey& part,
                                       absl::FunctionRef<absl::Status()> body) {
  if (!graph_step_) {
    ++graph_stats_.eager;
    return body();
  }
  GraphEntry& g = graphs_[GraphKey{part, *graph_step_, graph_plan_base_}];
  g.last_use = ++graph_clock_;
  if (g.eager_only) {
    ++graph_stats_.eager;
    return body();
  }
  if (g.exec != nullptr) {
    ++graph_stats_.replayed;
    DSV3_CUDA_CHECK(cudaGraphLaunch(g.exec, stream_));
    return absl::OkStatus();
  }
  if (!g.clean) {
    ++graph_stats_.eager;
    part_running_ = true;
    part_host_work_ = false;
    allocator_->StartCounting();
    absl::Status status = body();
    g.arena_bytes = allocator_->StopCounting();
    part_running_ = false;
    // A step that lost its graph signature inside the part (FormFor) is not a clean run either.
    g.clean = status.ok() && !part_host_work_ && graph_step_.has_value();
    return status;
  }

  // Capture: temporaries from the newest capture arena (a bigger one when this part needs it).
  if (capture_arenas_.empty() || capture_arenas_.back().arena->size() < g.arena_bytes) {
    const int64_t previous = capture_arenas_.empty() ? 0 : capture_arenas_.back().arena->size();
    const int64_t size = std::max(g.arena_bytes, 2 * previous);
    if (GraphMemoryBytes() + size > graph_memory_limit_) {
      g.eager_only = true;
      ++graph_stats_.over_budget;
      ++graph_stats_.eager;
      return body();
    }
    PlanArenaSlot slot;
    slot.memory = Tensor(allocator_.get(), DType::kU8, {size});
    slot.arena = std::make_unique<ArenaAllocator>(slot.memory.view().data, size, Device::kCuda);
    graph_stats_.arena_bytes += size;
    capture_arenas_.push_back(std::move(slot));
  }
  ArenaAllocator& arena = *capture_arenas_.back().arena;
  arena.Reset();
  DSV3_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  active_arena_ = &arena;
  capturing_ = true;
  const absl::Status status = body();
  capturing_ = false;
  active_arena_ = nullptr;
  cudaGraph_t graph = nullptr;
  DSV3_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  if (!status.ok()) {
    // Nothing ran (a collective failed while being recorded): the step fails as it would have.
    cudaGraphDestroy(graph);
    g.clean = false;
    return status;
  }
  // The driver takes the executable graph's memory outside the pool: counted by what it took.
  size_t free_before = 0, free_after = 0, total = 0;
  DSV3_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
  DSV3_CUDA_CHECK(cudaGraphInstantiate(&g.exec, graph, 0));
  DSV3_CUDA_CHECK(cudaGraphDestroy(graph));
  DSV3_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
  g.exec_bytes = std::max<int64_t>(0, static_cast<int64_t>(free_before) -
                                          static_cast<int64_t>(free_after));
  graph_exec_bytes_ += g.exec_bytes;
  ++graph_stats_.captured;
  DSV3_CUDA_CHECK(cudaGraphLaunch(g.exec, stream_));

  if (graphs_.size() > kMaxGraphs) {
    // Never the one just made, which has the newest use.
    DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
    DropOlderHalf(graphs_, [this](const GraphEntry& entry) {
      if (entry.exec != nullptr) cudaGraphExecDestroy(entry.exec);
      graph_exec_bytes_ -= entry.exec_bytes;
    });
  }
  return absl::OkStatus();
}

void CudaBackend::DropGraphs(uint64_t owner) {
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::erase_if(graphs_, [this, owner](auto& item) {
    if (std::get<0>(item.first).owner != owner) return false;
    if (item.second.exec != nullptr) cudaGraphExecDestroy(item.second.exec);
    graph_exec_bytes_ -= item.second.exec_bytes;
    return true;
  });
}

int64_t CudaBackend::GraphMemoryBytes() const {
  int64_t bytes = graph_stats_.arena_bytes + graph_exec_bytes_;
  for (const auto& [sig, slot] : plan_arenas_) bytes += slot.arena ? slot.arena->size() : 0;
  return bytes;
}

CudaBackend::GraphStats CudaBackend::graph_stats() const {
  GraphStats stats = graph_stats_;
  stats.graphs = 0;
  for (const auto& [key, entry] : graphs_) stats.graphs += entry.exec != nullptr;
  stats.memory_bytes = GraphMemoryBytes();
  return stats;
}

}  // namespace dsv3
