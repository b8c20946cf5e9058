// Page-locked host memory (cudaHostAlloc, portable to every device of the process): copies
// between it and the GPU are DMA at PCIe speed and truly asynchronous, where pageable memory is
// copied through a driver bounce buffer. For the weight loader's staging ring; not write-combined,
// because the loader's value checks read it on the CPU.
#pragma once

#include "engine/backend/tensor.h"

namespace dsv3 {

// Allocate returns nullptr when the memory cannot be pinned.
Allocator* PinnedHostAllocator();

}  // namespace dsv3
