// How every kernel in this folder is launched: with programmatic dependent launch (PDL, sm_90)
// when the calling thread asks for it (SetProgrammaticLaunch; CudaBackend does in decode and
// verify steps), so that a kernel's launch and block scheduling overlap the end of the one before.
//
// A decode step at batch 1 is ~40 small kernels per layer of a few microseconds each; launched
// the plain way, each one starts only after the one before has drained, which costs a launch
// latency and a ramp-up per kernel, inside CUDA graphs too. With PDL the next grid is launched
// as soon as every block of the running one has called LetNextKernelLaunch(); its blocks become
// resident and wait in WaitForPrecedingKernel() until the running grid has finished and its
// writes are visible.
//
// The contract that keeps this exact: every kernel launched through Launch() calls
// KernelPrologue() before it reads anything that kernels write (activations, caches, indices:
// all but the weights, which only loading writes) and before it writes anything at all (a
// buffer it writes may still be read by the kernel before it). A kernel that skipped it could
// finish before its predecessor, and its successor, which waits only for it, would then race the
// predecessor.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/launch_check.h"
#include "kernels/programmatic_launch.h"

namespace dsv3::kernels {

// Returns once the preceding kernel in the stream has completed and its memory operations are
// visible; at once when this grid was not launched with PDL (or nothing precedes it).
__device__ __forceinline__ void WaitForPrecedingKernel() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

// Lets the stream's next kernel launch (once every block of this grid has called it or exited).
__device__ __forceinline__ void LetNextKernelLaunch() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// The first statement of every kernel: wait for the one before, then let the one after get its
// blocks resident. Triggering after the wait keeps the overlap one kernel deep: the next grid's
// blocks never take SM slots from a kernel that is not yet running.
__device__ __forceinline__ void KernelPrologue() {
  WaitForPrecedingKernel();
  LetNextKernelLaunch();
}

// kernel<<<grid, block, smem, stream>>>(args...), with PDL when ProgrammaticLaunch(); checks the
// launch. Captured into CUDA graphs as programmatic edges.
// cluster_x > 1: blocks in clusters of cluster_x along x (grid.x a multiple of it).
template <typename... Params, typename... Args>
void LaunchInClusters(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream, unsigned cluster_x, Args&&... args) {
  cudaLaunchAttribute attributes[2] = {};
  unsigned count = 0;
  if (ProgrammaticLaunch()) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_x > 1) {
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count++].val.clusterDim = {cluster_x, 1, 1};
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attributes;
  config.numAttrs = count;
  DSV3_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

template <typename... Params, typename... Args>
void Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            Args&&... args) {
  LaunchInClusters(kernel, grid, block, smem, stream, 1, std::forward<Args>(args)...);
}

}  // namespace dsv3::kernels
