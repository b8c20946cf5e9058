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
  }

  int64_t Mark() override {
    if (used_ == events_.size()) {
      cudaEvent_t e;
      DSV3_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    DSV3_CUDA_CHECK(cudaEventRecord(events_[used_], stream_));
    return static_cast<int64_t>(used_++);
  }
  float ElapsedMs(int64_t from, int64_t to) override {
    DSV3_CUDA_CHECK(cudaEventSynchronize(events_[to]));
    float ms = 0;
    DSV3_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[from], events_[to]));
    return ms;
  }
  // The events stay, recorded again by the next marks.
  void Reset() override { used_ = 0; }

 private:
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;  // marks [0, used_) are live
  size_t used_ = 0;
};

}  // namespace

std::unique_ptr<WorkClock> MakeCudaEventClock(cudaStream_t stream) {
  return std::make_unique<CudaEventClock>(stream);
}

}  // namespace dsv3
