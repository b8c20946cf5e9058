// TMA tensor maps for the sm_90a kernels that load tiles with cp.async.bulk.tensor (the prefill
// grouped FP8 GEMM, the flash decode kernel): cuTensorMapEncodeTiled reached through the
// runtime's driver entry point, so nothing links against the driver library.
#pragma once

#include <cuda.h>

namespace dsv3::kernels {

// A map of a `rank`-dimensional tensor at `base`: dims[0] the contiguous one (elements),
// strides[i] the bytes between consecutive indices of dimension i + 1, boxes of box[] elements,
// 128-byte swizzled (box[0] * element size must be at most 128 bytes), reads outside the dims
// as zeros. Aborts with the driver's error when the arguments are not encodable.
CUtensorMap EncodeTensorMap(CUtensorMapDataType type, int rank, const cuuint64_t* dims,
                            const cuuint64_t* strides, const cuuint32_t* box, void* base);

}  // namespace dsv3::kernels
