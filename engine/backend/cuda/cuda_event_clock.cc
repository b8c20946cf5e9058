#include "engine/backend/cuda/cuda_event_clock.h"

#include <vector>

#include "kernels/launch_check.h"

namespace dsv3 {

namespace {

class CudaEventClock final : public WorkClock {
 public:
  explicit CudaEventClock(cudaStream_t stream) : stream_(stream) {}
  ~CudaEventClock() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    for (cudaEvent_t e : in_graphs_) cudaEventDestroy(e);
  }

  int64_t Mark() override {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    DSV3_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capturing));
    if (capturing == cudaStreamCaptureStatusActive) {
      // An external record node: the graph records the event whenever it runs, so the mark
      // times the replays. The graph holds the event: it is never reused.
      cudaEvent_t e;
      DSV3_CUDA_CHECK(cudaEventCreate(&e));
      DSV3_CUDA_CHECK(cudaEventRecordWithFlags(e, stream_, cudaEventRecordExternal));
      in_graphs_.push_back(e);
      return kInGraph + static_cast<int64_t>(in_graphs_.size()) - 1;
    }
    if (used_ == events_.size()) {
      cudaEvent_t e;
      DSV3_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    DSV3_CUDA_CHECK(cudaEventRecord(events_[used_], stream_));
    return static_cast<int64_t>(used_++);
  }
  float ElapsedMs(int64_t from, int64_t to) override {
    DSV3_CUDA_CHECK(cudaEventSynchronize(Event(to)));
    float ms = 0;
    DSV3_CUDA_CHECK(cudaEventElapsedTime(&ms, Event(from), Event(to)));
    return ms;
  }
  // The events stay, recorded again by the next marks.
  void Reset() override { used_ = 0; }

 private:
  // Ids of marks made during a capture start here.
  static constexpr int64_t kInGraph = int64_t{1} << 40;
  cudaEvent_t Event(int64_t id) const {
    return id >= kInGraph ? in_graphs_[id - kInGraph] : events_[id];
  }

  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;  // marks [0, used_) are live
  size_t used_ = 0;
  std::vector<cudaEvent_t> in_graphs_;  // marks recorded by captured graphs, kept
};

}  // namespace

std::unique_ptr<WorkClock> MakeCudaEventClock(cudaStream_t stream) {
  return std::make_unique<CudaEventClock>(stream);
}

}  // namespace dsv3
