// GpuEmulationBackend: the CPU backend rounding like the CUDA backend where the GPU's numerics
// differ from float32, so that GPU tests (and dsv3-eval --cpu-emulation) compare against a CPU
// model that rounds like the GPU (docs/cuda.md). A wrapper: the CPU backend itself stays plain
// float32, the reference; this rounds the inputs it hands it and the outputs the GPU stores.
#pragma once

#include <cstdint>
#include <unordered_set>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/dtype.h"
#include "engine/backend/forwarding_backend.h"

namespace dsv3 {

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

// Which of the GPU's roundings to reproduce (both off: the plain CPU backend's numerics).
struct GpuEmulation {
  // Before every linear layer whose weight was FP8 (LoadLinear/MakeLinear of an F8_E4M3 weight),
  // x is quantized like the GPU's 1x128 activation scaling: per row and per 128 columns,
  // s = max(amax, 1e-4) / 448, x := e4m3(x / s) * s (round to nearest even, saturating).
  bool fp8_activations = false;
  // Activations rounded to BF16 where the GPU holds them in BF16: the inputs of linear layers,
  // rotary embedding and SiLU-gate, the q_a and kv_a latents RMSNorm normalizes in place, the
  // embedding rows, the latent cache, each expert's output before the weighted combine, and the
  // GPU's BF16 copies of MLA's kv_b and of the router weights. Not the residual stream, which
  // the GPU keeps in F32 (its additions and the RMSNorms that read it into another buffer stay
  // exact).
  bool bf16_activations = false;
};

class GpuEmulationBackend final : public ForwardingBackend {
 public:
  // A CpuBackend of `num_threads` threads (<= 0: one per hardware thread), wrapped.
  GpuEmulationBackend(int num_threads, const GpuEmulation& emulation);

  const GpuEmulation& emulation() const { return emulation_; }

  absl::StatusOr<LinearWeight> LoadLinear(const TensorSource& source, const std::string& prefix,
                                          int64_t n, int64_t k, const Slice2D& slice,
                                          std::vector<Tensor>& storage) override;
  absl::StatusOr<LinearWeight> MakeLinear(const TensorView& weight, const TensorView& scale_inv,
                                          std::vector<Tensor>& storage) override;

  void Embedding(const TensorView& table, std::span<const int32_t> ids, int64_t first_row,
                 const TensorView& out) override;
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps,
               const TensorView& out) override;
  void Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) override;
  void Rope(const TensorView& x, std::span<const int32_t> positions,
            const RopeParams& rope) override;
  void SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) override;
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

 private:
  // A view of x's values as the GPU would feed them to an op: x itself with no emulation, else a
  // contiguous copy in `buf` rounded to BF16 (bf16_activations) and, when `fp8` is set,
  // quantized to e4m3 per 128 columns (fp8_activations). x has 2 or 3 dimensions.
  TensorView EmulatedInput(const TensorView& x, bool fp8, std::vector<float>& buf) const;
  // Rounds the rows of a 2-D view to BF16 in place (bf16_activations only).
  void RoundRowsToBf16(const TensorView& x) const;
  // Marks a weight made from FP8 data (fp8_activations only).
  void NoteFp8(const LinearWeight& w);

  GpuEmulation emulation_;
  // Data of the linear weights made from FP8 (fp8_activations only). A weight's entry stays after
  // the weight is freed: emulation is for tests, which keep their models as long as the backend.
  std::unordered_set<const void*> fp8_weights_;
};

}  // namespace dsv3
