// Whole-step CUDA graphs: the CUDA backend's StepGraphCapture, driven by the decode graph runner
// (engine/model/step_graphs.h). At batch 1 a layer was ~45 launches and ~30 stream-ordered
// allocations of a few microseconds each, so the host set the pace; a graph replays the whole
// step (every layer, the final norm and the head) with one launch.
//
// - A measured run is an eager step while the pool places its allocations and frees on a stack
//   (StreamAllocator counting): its peak is the capture arena the same ops need, since the arena
//   reuses memory in the same stack order. Host work in it (NoteHostWork) makes it unfit.
// - A capture records the step with its temporaries carved from the newest capture arena (a
//   bigger one when this step needs more; older ones stay for the graphs that use them: graphs
//   run one after another on the stream, so they can share one).
// - The step plan of a graph step lives in the graph workspace (BuildPlan), at addresses fixed by
//   the step's shape; plan_epoch() changes when the workspace moves.
// - Graph memory (capture arenas, the workspace, instantiated graphs) stays within
//   SetGraphMemoryLimit, the reserve that KV sizing sets aside (--cuda-graph-memory-mb): a capture
//   that would pass it is refused (ResourceExhausted) and its step stays eager.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "engine/backend/arena_allocator.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/graph_policy.h"
#include "kernels/launch_check.h"

namespace dsv3 {

class CudaStepGraphs final : public StepGraphCapture {
 public:
  explicit CudaStepGraphs(CudaBackend& backend) : b_(backend) {}
  ~CudaStepGraphs() override { DropAll(); }

  void BeginMeasuredRun() override {
    b_.measuring_ = true;
    b_.host_work_ = false;
    b_.allocator_->StartCounting();
  }
  Measure EndMeasuredRun() override {
    b_.measuring_ = false;
    return {b_.allocator_->StopCounting(), b_.host_work_};
  }

  absl::StatusOr<GraphId> Capture(int64_t temporaries_bytes,
                                  absl::FunctionRef<absl::Status()> body) override {
    const int64_t current = arenas_.empty() ? 0 : arenas_.back().arena->size();
    if (current < temporaries_bytes) {
      const int64_t size = CaptureArenaBytes(current, temporaries_bytes);
      if (!Fits(size)) return absl::ResourceExhaustedError("graph memory limit");
      Arena a;
      a.memory = Tensor(b_.allocator_.get(), DType::kU8, {size});
      a.arena = std::make_unique<ArenaAllocator>(a.memory.view().data, size, Device::kCuda);
      budget_.Add(size);
      arenas_.push_back(std::move(a));
    }
    ArenaAllocator& arena = *arenas_.back().arena;
    arena.Reset();
    DSV3_CUDA_CHECK(cudaStreamBeginCapture(b_.stream_, cudaStreamCaptureModeThreadLocal));
    b_.active_arena_ = &arena;
    b_.capturing_ = true;
    const absl::Status status = body();
    b_.capturing_ = false;
    b_.active_arena_ = nullptr;
    cudaGraph_t graph = nullptr;
    DSV3_CUDA_CHECK(cudaStreamEndCapture(b_.stream_, &graph));
    if (!status.ok()) {
      // Nothing ran (a collective failed while being recorded): the step fails as it would have.
      cudaGraphDestroy(graph);
      return status;
    }
    // The driver takes the executable graph's memory outside the pool: counted by what it took.
    size_t free_before = 0, free_after = 0, total = 0;
    DSV3_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
    cudaGraphExec_t exec = nullptr;
    DSV3_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    DSV3_CUDA_CHECK(cudaGraphDestroy(graph));
    DSV3_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
    const int64_t exec_bytes = std::max<int64_t>(
        0, static_cast<int64_t>(free_before) - static_cast<int64_t>(free_after));
    if (!Fits(exec_bytes)) {
      DSV3_CUDA_CHECK(cudaGraphExecDestroy(exec));
      return absl::ResourceExhaustedError("graph memory limit");
    }
    budget_.Add(exec_bytes);
    graphs_.push_back({exec, exec_bytes});
    return static_cast<GraphId>(graphs_.size() - 1);
  }

  void Launch(GraphId id, absl::FunctionRef<absl::Status()>) override {
    DSV3_CUDA_CHECK(cudaGraphLaunch(graphs_.at(id).exec, b_.stream_));
  }

  void DropAll() override {
    if (graphs_.empty() && arenas_.empty()) return;
    DSV3_CUDA_CHECK(cudaStreamSynchronize(b_.stream_));
    for (const Graph& g : graphs_) cudaGraphExecDestroy(g.exec);
    graphs_.clear();
    arenas_.clear();
    budget_ = GraphMemoryBudget();
  }

  int64_t memory_bytes() const override { return budget_.used() + WorkspaceBytes(); }
  uint64_t plan_epoch() const override { return b_.plan_epoch_; }
  // At the flash decode kernel's dims BuildForm picks it for every decode step.
  bool DecodeReadsOwnKeysOnly(int64_t kv_lora_rank, int64_t rope_dim) const override {
    return CudaBackend::FlashDecodeDims(kv_lora_rank, rope_dim);
  }

 private:
  struct Graph {
    cudaGraphExec_t exec;
    int64_t exec_bytes;
  };
  struct Arena {
    Tensor memory;
    std::unique_ptr<ArenaAllocator> arena;
  };
  int64_t WorkspaceBytes() const {
    return b_.graph_workspace_arena_ ? b_.graph_workspace_arena_->size() : 0;
  }
  bool Fits(int64_t more) const {
    return budget_.used() + WorkspaceBytes() + more <= b_.graph_memory_limit_;
  }

  CudaBackend& b_;
  std::vector<Graph> graphs_;  // by GraphId
  std::vector<Arena> arenas_;  // the newest last
  GraphMemoryBudget budget_;   // arenas and instantiated graphs
};

StepGraphCapture* CudaBackend::step_graphs() {
  if (!options_.cuda_graphs) return nullptr;
  if (graphs_ == nullptr) graphs_ = std::make_unique<CudaStepGraphs>(*this);
  return graphs_.get();
}

void CudaBackend::NoteHostWork(const char* what) {
  if (capturing_) {
    std::fprintf(stderr, "CUDA graph capture: %s inside a captured step\n", what);
    std::abort();
  }
  if (measuring_) host_work_ = true;
}

}  // namespace dsv3
