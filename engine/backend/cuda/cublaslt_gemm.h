// cuBLASLt matmuls of the CUDA backend, with one cached plan (descriptors, layouts, algorithm)
// per shape: block-scaled FP8 as measured in SPEC section 4, and BF16 (optionally batched).
// Column-major conventions, as cuBLASLt's own: D[m, n] = op(A)[m, k] op(B)[k, n].
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"

namespace dsv3 {

// Y[M, N] = X[M, K] W[N, K]^T with W e4m3 in 128x128 blocks and X e4m3 in 1x128 blocks.
// W is stored row-major with row stride k_padded and n_padded rows (both cuBLASLt operand
// sizes), w_scale is the checkpoint's scale_inv [ceil(N/128), ceil(K/128)]; X is
// [m_padded, k_padded] with scales [k_padded/128, m_padded]; D is [m_padded, n_padded] BF16
// (F32 with d_f32), row stride ldd; add_to_d adds the product to D (beta = 1). m_padded % 4 ==
// 0 and k_padded % 128 == 0.
struct Fp8GemmArgs {
  const void* w;
  const float* w_scale;
  int64_t n_padded, k_padded;
  const void* x;
  const float* x_scale;
  int64_t m_padded;
  void* d;
  int64_t ldd;
  bool d_f32 = false;
  bool add_to_d = false;
};

// D = op(A) op(B) (D += with add_to_d) for `batch` matrices at fixed strides (elements). A and B
// BF16; D BF16 or F32.
struct Bf16GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* d = nullptr;
  int64_t ldd = 0, stride_d = 0;
  bool d_f32 = false;
  bool add_to_d = false;
  int32_t batch = 1;
};

class CublasLtGemm {
 public:
  // `stream` must outlive this object.
  static absl::StatusOr<std::unique_ptr<CublasLtGemm>> Create(cudaStream_t stream);
  ~CublasLtGemm();
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;

  // Fails (without launching) when cuBLASLt offers no algorithm for the shape.
  absl::Status Fp8(const Fp8GemmArgs& args);
  absl::Status Bf16(const Bf16GemmArgs& args);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    ~Plan();
  };
  // Kind, transposes, sizes, leading dimensions and batch strides, batch, D type, and the
  // alignment (bytes) of the A, B and D pointers, which limits the kernels cuBLASLt may pick.
  using Key = std::tuple<int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int64_t, int64_t, int32_t, bool, uint32_t, uint32_t, uint32_t>;

  CublasLtGemm(cudaStream_t stream) : stream_(stream) {}
  absl::StatusOr<Plan*> Fp8Plan(const Fp8GemmArgs& args);
  absl::StatusOr<Plan*> Bf16Plan(const Bf16GemmArgs& args);
  absl::Status ChooseAlgo(Plan& plan, uint32_t align_a, uint32_t align_b, uint32_t align_d);

  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  static constexpr size_t kWorkspaceBytes = 32 << 20;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace dsv3
