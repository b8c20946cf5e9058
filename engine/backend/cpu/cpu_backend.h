// The CPU backend: the numerical reference for every other backend. Float32 everywhere (FP8 and
// BF16 weights are dequantized at load), matmuls through OpenBLAS, other loops spread over a
// thread pool. Simple on purpose: it must be obviously right.
#pragma once

#include <memory>
#include <unordered_set>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/backend/dtype.h"

namespace dsv3 {

// Options of the CPU backend. The two emulation switches make it reproduce the CUDA backend's
// numerics where they differ from float32, so that GPU tests can compare against a CPU model that
// rounds like the GPU (docs/cuda.md). Both are off by default: plain float32, the reference.
struct CpuBackendOptions {
  int num_threads = 0;  // <= 0: one per hardware thread
  // Before every linear layer whose weight was FP8 (LoadLinear/MakeLinear of an F8_E4M3 weight),
  // x is quantized like the GPU's 1x128 activation scaling: per row and per 128 columns,
  // s = max(amax, 1e-4) / 448, x := e4m3(x / s) * s (round to nearest even, saturating).
  bool fp8_activations = false;
  // Activations rounded to BF16 where the GPU holds them in BF16: the inputs of linear layers,
  // rotary embedding and SiLU-gate, the q_a and kv_a latents RMSNorm normalizes in place, the
  // latent cache, each expert's output before the weighted combine, and the GPU's BF16 copies
  // of MLA's kv_b and of the router weights. Not the residual stream, which the GPU keeps in
  // F32 (its additions and the RMSNorms that read it into another buffer stay exact).
  bool bf16_activations = false;
};

// e4m3 (OCP, finite) round to nearest even with saturation to +-448, returned as float:
// Fp8E4M3ToF32(F32ToFp8E4M3(v)) without the table search. NaN stays NaN.
float RoundToE4M3(float v);
// The GPU's activation quantization, in place: x [rows, cols] (row stride `stride`), each row's
// 128-column blocks (the last one partial) replaced by e4m3(x / s) * s with
// s = max(amax of the block, 1e-4) / 448. `scales` (optional) receives s, [rows, ceil(cols/128)].
void FakeQuantizeActivations(float* x, int64_t rows, int64_t cols, int64_t stride,
                             float* scales = nullptr);
// BF16 round to nearest even, as float.
inline float RoundToBf16(float v) { return Bf16ToF32(F32ToBf16(v)); }

class CpuBackend final : public Backend {
 public:
  // num_threads <= 0: one per hardware thread.
  explicit CpuBackend(int num_threads = 0);
  explicit CpuBackend(const CpuBackendOptions& options);

  Device device() const override { return Device::kCpu; }
  Allocator* allocator() override { return HostAllocator(); }
  std::string name() const override { return "cpu"; }

  absl::StatusOr<LinearWeight> LoadLinear(const TensorSource& ckpt, const std::string& prefix,
                                          int64_t n, int64_t k, const Slice2D& slice,
                                          std::vector<Tensor>& storage) override;
  absl::StatusOr<TensorView> LoadDense(const TensorSource& ckpt, const std::string& name,
                                       std::span<const int64_t> shape,
                                       std::vector<Tensor>& storage) override;
  absl::StatusOr<LinearWeight> MakeLinear(const TensorView& weight, const TensorView& scale_inv,
                                          std::vector<Tensor>& storage) override;
  Tensor Upload(const TensorView& host) override;
  void Download(const TensorView& device_tensor, float* host) override;

  void Embedding(const TensorView& table, std::span<const int32_t> ids, int64_t first_row,
                 const TensorView& out) override;
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps,
               const TensorView& out) override;
  void Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) override;
  void Add(const TensorView& a, const TensorView& b, const TensorView& out) override;
  void Rope(const TensorView& x, std::span<const int32_t> positions,
            const RopeParams& rope) override;
  void SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) override;
  void Copy(const TensorView& src, const TensorView& dst) override;
  void GatherRows(const TensorView& x, std::span<const int32_t> rows,
                  const TensorView& out) override;
  void WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                    const TensorView& cache) override;
  void MlaAttention(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                    const AttentionBatch& batch, const MlaParams& params,
                    const TensorView& out) override;
  void MoeRoute(const TensorView& x, const TensorView& router, const TensorView& bias,
                const MoeRouteParams& params, const TensorView& topk_ids,
                const TensorView& topk_weights) override;
  void MoeExperts(const TensorView& x, const TensorView& topk_ids, const TensorView& topk_weights,
                  std::span<const ExpertWeights> experts, int64_t expert_begin,
                  const TensorView& out) override;

  ThreadPool& pool() { return pool_; }
  const CpuBackendOptions& options() const { return options_; }

 private:
  // bf16_activations: v rounded to BF16, else v.
  float In(float v) const { return options_.bf16_activations ? RoundToBf16(v) : v; }
  // A view of x's values as the GPU would feed them to `consumer`: x itself with no emulation,
  // else a contiguous copy in `buf` rounded to BF16 (bf16_activations) and, when `fp8` is set,
  // quantized to e4m3 per 128 columns (fp8_activations). x has 2 or 3 dimensions.
  TensorView EmulatedInput(const TensorView& x, bool fp8, std::vector<float>& buf) const;
  // MlaAttention on the values as given (no emulation).
  void MlaAttentionF32(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                       const AttentionBatch& batch, const MlaParams& params,
                       const TensorView& out);
  // Marks a weight made from FP8 data (fp8_activations only).
  void NoteFp8(const LinearWeight& w);

  CpuBackendOptions options_;
  ThreadPool pool_;
  // Data of the linear weights made from FP8 (fp8_activations only). A weight's entry stays after
  // the weight is freed: emulation is for tests, which keep their models as long as the backend.
  std::unordered_set<const void*> fp8_weights_;
};

// C[M, N] = A[M, K] B[N, K]^T (+ beta * C) with row strides lda, ldb, ldc (float32, OpenBLAS).
void SgemmNT(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc, float beta = 0.0f);
// C[M, N] = A[M, K] B[K, N] with row strides lda, ldb, ldc.
void SgemmNN(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc);

}  // namespace dsv3
