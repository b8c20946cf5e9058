// A WorkClock on a CUDA stream (timing_hooks.h): each mark is an event recorded on the stream,
// so TimingBackend times a CudaBackend's ops where they run, without synchronizing between them.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "engine/backend/timing_hooks.h"

namespace dsv3 {

std::unique_ptr<WorkClock> MakeCudaEventClock(cudaStream_t stream);

}  // namespace dsv3
