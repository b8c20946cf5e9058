// Per-op timing for benchmarks (tools/dsv3-bench): events recorded on the backend's stream
// around each op while SetOpTiming(true), summed per op name when taken.
#include <algorithm>

#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/launch_check.h"

namespace dsv3 {

cudaEvent_t CudaBackend::TakeEvent() {
  if (!free_events_.empty()) {
    cudaEvent_t e = free_events_.back();
    free_events_.pop_back();
    return e;
  }
  cudaEvent_t e;
  DSV3_CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

CudaBackend::OpScope::OpScope(CudaBackend& backend, const char* name) : name_(name) {
  if (!backend.op_timing_) return;
  backend_ = &backend;
  start_ = backend.TakeEvent();
  DSV3_CUDA_CHECK(cudaEventRecord(start_, backend.stream_));
}

CudaBackend::OpScope::~OpScope() {
  if (backend_ == nullptr) return;
  cudaEvent_t end = backend_->TakeEvent();
  DSV3_CUDA_CHECK(cudaEventRecord(end, backend_->stream_));
  backend_->op_events_.push_back({name_, start_, end});
}

std::vector<std::pair<std::string, float>> CudaBackend::TakeOpTimes() {
  std::vector<std::pair<std::string, float>> totals;
  if (op_events_.empty()) return totals;
  DSV3_CUDA_CHECK(cudaEventSynchronize(op_events_.back().end));
  for (const OpEvents& e : op_events_) {
    float ms = 0;
    DSV3_CUDA_CHECK(cudaEventElapsedTime(&ms, e.start, e.end));
    auto it = std::find_if(totals.begin(), totals.end(),
                           [&](const auto& t) { return t.first == e.name; });
    if (it == totals.end()) {
      totals.emplace_back(e.name, ms);
    } else {
      it->second += ms;
    }
    free_events_.push_back(e.start);
    free_events_.push_back(e.end);
  }
  op_events_.clear();
  return totals;
}

}  // namespace dsv3
