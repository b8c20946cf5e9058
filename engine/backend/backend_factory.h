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
#include "spdlog/spdlog.h"
#if defined(DSV3_HAVE_CUDA_BACKEND)
#include "engine/backend/cuda/cuda_backend.h"
#endif

namespace dsv3 {

// The device a --device value names: "cpu" and "cuda" are themselves; "auto" is "cuda" when
// this build has the CUDA backend and a GPU is visible, else "cpu", and says which in the log
// (an image runs on hosts with and without GPUs, and a pod whose GPU went missing should say so
// rather than silently serve 100x slower). Anything else: InvalidArgument naming the flag.
inline absl::StatusOr<std::string> ResolveDevice(const std::string& device) {
  if (device == "cpu" || device == "cuda") return device;
  if (device != "auto") {
    return absl::InvalidArgumentError("--device must be auto, cpu or cuda, not '" + device + "'");
  }
#if defined(DSV3_HAVE_CUDA_BACKEND)
  if (const int gpus = CudaBackend::DeviceCount(); gpus > 0) {
    spdlog::info("--device auto: {} GPU(s) visible, using cuda", gpus);
    return std::string("cuda");
  }
  spdlog::warn("--device auto: no GPU visible, using cpu");
#else
  spdlog::info("--device auto: this build has no CUDA backend, using cpu");
#endif
  return std::string("cpu");
}

// device "cpu": a CpuBackend with `threads` threads (0: all). device "cuda": a CudaBackend on
// GPU `local_rank` (FailedPrecondition when the build has no CUDA backend, or the backend's
// error when there is no usable GPU). device "auto": as ResolveDevice decides. Anything else:
// InvalidArgument.
inline absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& requested,
                                                            int threads, int local_rank) {
  auto device = ResolveDevice(requested);
  if (!device.ok()) return device.status();
  if (*device == "cpu") return std::make_unique<CpuBackend>(threads);
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

}  // namespace dsv3
