// The CPU backend: the numerical reference for every other backend. Float32 everywhere (FP8 and
// BF16 weights are dequantized at load), matmuls through OpenBLAS, other loops spread over a
// thread pool. Simple on purpose: it must be obviously right. GpuEmulationBackend
// (gpu_emulation_backend.h) wraps it to round like the CUDA backend.
#pragma once

#include <memory>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/backend/dtype.h"

namespace dsv3 {

class CpuBackend final : public Backend {
 public:
  // num_threads <= 0: one per hardware thread.
  explicit CpuBackend(int num_threads = 0);

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
  void CopyToHost(const TensorView& src, void* host) override;
  void CopyFromHost(const void* host, const TensorView& dst) override;

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
  void ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                      const TensorView& out) override;
  void PadRows(const TensorView& x, float fill, const TensorView& out) override;
  void SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) override;
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

 private:
  ThreadPool pool_;
};

// MoeExperts of the reference: for each local expert, its tokens gathered, then gate, up,
// SiluMul and down through `ops` (a CpuBackend, or a wrapper around one whose Linear and SiluMul
// the experts then go through), and out[t] += w * expert_output(y[t]) in expert order.
// `expert_output` maps each value of an expert's output before the weighted sum: the identity
// for the reference, a rounding where a wrapper emulates a device that stores it rounded.
void MoeExpertsOneByOne(Backend& ops, const TensorView& x, const TensorView& topk_ids,
                        const TensorView& topk_weights, std::span<const ExpertWeights> experts,
                        int64_t expert_begin, const TensorView& out,
                        float (*expert_output)(float));

// C[M, N] = A[M, K] B[N, K]^T (+ beta * C) with row strides lda, ldb, ldc (float32, OpenBLAS).
void SgemmNT(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc, float beta = 0.0f);
// C[M, N] = A[M, K] B[K, N] with row strides lda, ldb, ldc.
void SgemmNN(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc);

}  // namespace dsv3
