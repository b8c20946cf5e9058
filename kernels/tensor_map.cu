#include "kernels/tensor_map.cuh"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/launch_check.h"

namespace dsv3::kernels {

namespace {

PFN_cuTensorMapEncodeTiled_v12000 EncodeTiled() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found;
    DSV3_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                     cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess) {
      std::fprintf(stderr, "cuTensorMapEncodeTiled not found\n");
      std::abort();
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

}  // namespace

CUtensorMap EncodeTensorMap(CUtensorMapDataType type, int rank, const cuuint64_t* dims,
                            const cuuint64_t* strides, const cuuint32_t* box, void* base) {
  CUtensorMap map;
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  const CUresult r = EncodeTiled()(&map, type, rank, base, dims, strides, box, unit,
                                   CU_TENSOR_MAP_INTERLEAVE_NONE,
                                   CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled failed (%d), rank %d\n", static_cast<int>(r),
                 rank);
    std::abort();
  }
  return map;
}

}  // namespace dsv3::kernels
