// MakeBackend: the backend a binary runs on, by name, so that binaries need no #ifdefs.
//
// Header-only on purpose: DSV3_HAVE_CUDA_BACKEND is a public definition of dsv3_cuda, so it is
// seen by the translation units of whatever links the engine with CUDA (the binaries), not by
// the backend area's own library, which is built before and without the CUDA backend.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/backend/cpu/cpu_backend.h"
#if defined(DSV3_HAVE_CUDA_BACKEND)
#include "engine/backend/cuda/cuda_backend.h"
#endif

namespace dsv3 {

// device "cpu": a CpuBackend with `threads` threads (0: all). device "cuda": a CudaBackend on
// GPU `local_rank` (FailedPrecondition when the build has no CUDA backend, or the backend's
// error when there is no usable GPU). Anything else: InvalidArgument.
inline absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& device,
                                                            int threads, int local_rank) {
  if (device == "cpu") return std::make_unique<CpuBackend>(threads);
  if (device == "cuda") {
#if defined(DSV3_HAVE_CUDA_BACKEND)
    CudaBackend::Options options;
    options.device = local_rank;
    auto backend = CudaBackend::Create(options);
    if (!backend.ok()) return backend.status();
    return std::unique_ptr<Backend>(*std::move(backend));
#else
    (void)local_rank;
    return absl::FailedPreconditionError(
        "--device cuda: this build has no CUDA backend (configure with -DDSV3_CUDA=ON on a "
        "machine with nvcc)");
#endif
  }
  return absl::InvalidArgumentError("--device must be cpu or cuda, not '" + device + "'");
}

}  // namespace dsv3
