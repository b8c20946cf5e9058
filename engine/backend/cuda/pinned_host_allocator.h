// Page-locked host memory for the weight loader's staging ring: copies between it and the GPU
// are DMA at PCIe speed and truly asynchronous, where pageable memory is copied through a driver
// bounce buffer. Not write-combined, because the loader's value scan reads it on the CPU.
//
// Pinning a ring of several GB (cudaHostAlloc, or cudaHostRegister: the kernel faults in, zeroes
// and locks every page) takes about a second per 4 GB, which a warm load cannot spare. So
// Allocate maps the memory and returns at once, and a background thread registers it (portable
// to every device of the process): the readers start filling it meanwhile, and the first copies
// out of it may still go the pageable way. Free waits for the pinning to end.
#pragma once

#include "engine/backend/tensor.h"

namespace dsv3 {

// Allocate returns nullptr when the memory cannot be mapped; memory that cannot be pinned (a
// memlock limit) is used unpinned, with a warning.
Allocator* PinnedHostAllocator();

}  // namespace dsv3
