#include <algorithm>
#include <cassert>

#include "kernels/launch.cuh"
#include "kernels/weight_layout.cuh"

namespace dsv3::kernels {

namespace {

// One 16-byte piece per thread, piece i of the destination: k-block kb = i / (rows * 8), row
// r, piece q of the row's 128 bytes in that block.
__global__ void ToKBlockMajorKernel(const uint4* src, int64_t rows, int64_t k_pad, uint4* dst) {
  KernelPrologue();
  const int64_t pieces = rows * k_pad / 16;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < pieces;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t kb = i / (rows * 8), r = i / 8 % rows, q = i % 8;
    dst[i] = src[(r * k_pad + kb * 128) / 16 + q];
  }
}

}  // namespace

void ToKBlockMajor(const uint8_t* src, int64_t n, int64_t k_pad, uint8_t* dst,
                   cudaStream_t stream) {
  assert(k_pad % 128 == 0 && src != dst);
  const int64_t rows = WeightRowsPadded(n), pieces = rows * k_pad / 16;
  if (pieces == 0) return;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((pieces + kThreads - 1) / kThreads, 4096);
  Launch(ToKBlockMajorKernel, static_cast<int>(blocks), kThreads, 0, stream,
         reinterpret_cast<const uint4*>(src), rows, k_pad, reinterpret_cast<uint4*>(dst));
}

}  // namespace dsv3::kernels
