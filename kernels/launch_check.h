// Host-side error checks for kernel launches and CUDA runtime calls (host code only).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

// An op cannot return a Status (the Backend interface is void on the hot path): a failing CUDA
// call there is a broken invariant (bad launch configuration, device fault), so it aborts with
// the call, file and line.
#define DSV3_CUDA_CHECK(expr)                                                             \
  do {                                                                                    \
    const cudaError_t _dsv3_err = (expr);                                                 \
    if (_dsv3_err != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,           \
                   cudaGetErrorString(_dsv3_err));                                        \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

// After a kernel launch: reports launch errors (not asynchronous faults).
#define DSV3_CUDA_CHECK_LAUNCH() DSV3_CUDA_CHECK(cudaGetLastError())
