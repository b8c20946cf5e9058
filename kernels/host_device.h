// DSV3_HOST_DEVICE: functions of plain C++ on integers that both a kernel and the host (the
// backend's choices, unit tests walking a kernel's schedule) call.
#pragma once

#if defined(__CUDACC__)
#define DSV3_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DSV3_HOST_DEVICE inline
#endif
