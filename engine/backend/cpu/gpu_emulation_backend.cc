#include "engine/backend/cpu/gpu_emulation_backend.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <memory>

#include "engine/weights/tensor_source.h"

namespace dsv3 {

float RoundToE4M3(float v) {
  if (std::isnan(v)) return v;
  const float a = std::fabs(v);
  int e = 0;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): the binade is 2^(e-1)
  // 3 mantissa bits; below 2^-6 the subnormal step 2^-9.
  const float step = std::ldexp(1.0f, std::max(e - 1, -6) - 3);
  const float r = std::min(std::nearbyint(a / step) * step, 448.0f);
  return std::copysign(r, v);
}

void FakeQuantizeActivations(float* x, int64_t rows, int64_t cols, int64_t stride,
                             float* scales) {
  const int64_t blocks = (cols + 127) / 128;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      float* v = x + r * stride + b * 128;
      const int64_t n = std::min<int64_t>(128, cols - b * 128);
      float amax = 0.0f;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float s = std::max(amax, 1e-4f) / 448.0f;  // as kernels/fp8_quant.cu
      for (int64_t i = 0; i < n; ++i) v[i] = RoundToE4M3(v[i] / s) * s;
      if (scales != nullptr) scales[r * blocks + b] = s;
    }
  }
}

GpuEmulationBackend::GpuEmulationBackend(int num_threads, const GpuEmulation& emulation)
    : ForwardingBackend(std::make_unique<CpuBackend>(num_threads)), emulation_(emulation) {}

TensorView GpuEmulationBackend::EmulatedInput(const TensorView& x, bool fp8,
                                              std::vector<float>& buf) const {
  const bool quantize = fp8 && emulation_.fp8_activations;
  if (!quantize && !emulation_.bf16_activations) return x;
  assert(x.ndim == 2 || x.ndim == 3);
  const auto in = [&](float v) { return emulation_.bf16_activations ? RoundToBf16(v) : v; };
  const int64_t d1 = x.dim(1), d2 = x.ndim == 3 ? x.dim(2) : 1;
  const int64_t s1 = x.strides[1], s2 = x.ndim == 3 ? x.strides[2] : 1;
  buf.resize(x.dim(0) * d1 * d2);
  float* o = buf.data();
  for (int64_t i = 0; i < x.dim(0); ++i) {
    for (int64_t j = 0; j < d1; ++j) {
      for (int64_t l = 0; l < d2; ++l) *o++ = in(x.ptr<float>()[i * x.strides[0] + j * s1 + l * s2]);
    }
  }
  const int64_t cols = d1 * d2;
  if (quantize) FakeQuantizeActivations(buf.data(), x.dim(0), cols, cols);
  return x.ndim == 3 ? TensorView::Contiguous(buf.data(), DType::kF32, {x.dim(0), d1, d2})
                     : TensorView::Contiguous(buf.data(), DType::kF32, {x.dim(0), d1});
}

void GpuEmulationBackend::RoundRowsToBf16(const TensorView& x) const {
  if (!emulation_.bf16_activations) return;
  for (int64_t r = 0; r < x.dim(0); ++r) {
    float* row = x.ptr<float>() + r * x.strides[0];
    for (int64_t i = 0; i < x.dim(1); ++i) row[i] = RoundToBf16(row[i]);
  }
}

void GpuEmulationBackend::NoteFp8(const LinearWeight& w) {
  if (emulation_.fp8_activations) fp8_weights_.insert(w.weight.data);
}

absl::StatusOr<LinearWeight> GpuEmulationBackend::LoadLinear(const TensorSource& source,
                                                             const std::string& prefix,
                                                             int64_t n, int64_t k,
                                                             const Slice2D& slice,
                                                             std::vector<Tensor>& storage) {
  auto w = inner().LoadLinear(source, prefix, n, k, slice, storage);
  const auto stored = source.Get(prefix + ".weight");
  if (w.ok() && stored.ok() && stored->dtype == DType::kF8E4M3) NoteFp8(*w);
  return w;
}

absl::StatusOr<LinearWeight> GpuEmulationBackend::MakeLinear(const TensorView& weight,
                                                             const TensorView& scale_inv,
                                                             std::vector<Tensor>& storage) {
  auto w = inner().MakeLinear(weight, scale_inv, storage);
  if (w.ok() && weight.dtype == DType::kF8E4M3) NoteFp8(*w);
  return w;
}

void GpuEmulationBackend::Embedding(const TensorView& table, std::span<const int32_t> ids,
                                    int64_t first_row, const TensorView& out) {
  inner().Embedding(table, ids, first_row, out);
  RoundRowsToBf16(out);  // the GPU's table is BF16
}

void GpuEmulationBackend::RmsNorm(const TensorView& x, const TensorView& weight, float eps,
                                  const TensorView& out) {
  // The GPU's in-place norms are of BF16 linear outputs (the q_a and kv_a latents); the others
  // read the F32 residual stream into another buffer.
  std::vector<float> buf;
  const TensorView in = x.data == out.data ? EmulatedInput(x, false, buf) : x;
  inner().RmsNorm(in, weight, eps, out);
}

void GpuEmulationBackend::Linear(const TensorView& x, const LinearWeight& w,
                                 const TensorView& y) {
  std::vector<float> buf;
  inner().Linear(EmulatedInput(x, fp8_weights_.contains(w.weight.data), buf), w, y);
}

void GpuEmulationBackend::Rope(const TensorView& x, std::span<const int32_t> positions,
                               const RopeParams& rope) {
  // x [T, heads, >= rope_dim] is rotated in place: its rope_dim leading values of every head are
  // BF16 on the GPU.
  if (emulation_.bf16_activations) {
    for (int64_t t = 0; t < x.dim(0); ++t) {
      for (int64_t h = 0; h < x.dim(1); ++h) {
        float* v = x.ptr<float>() + t * x.strides[0] + h * x.strides[1];
        for (int64_t i = 0; i < rope.rope_dim; ++i) v[i] = RoundToBf16(v[i]);
      }
    }
  }
  inner().Rope(x, positions, rope);
}

void GpuEmulationBackend::SiluMul(const TensorView& gate, const TensorView& up,
                                  const TensorView& out) {
  std::vector<float> gate_buf, up_buf;
  inner().SiluMul(EmulatedInput(gate, false, gate_buf), EmulatedInput(up, false, up_buf), out);
}

void GpuEmulationBackend::WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                                       const TensorView& cache) {
  std::vector<float> buf;  // the GPU's cache is BF16
  inner().WriteKvCache(EmulatedInput(latent, false, buf), batch, cache);
}

void GpuEmulationBackend::MlaAttention(const TensorView& q, const TensorView& cache,
                                       const LinearWeight& kv_b, const AttentionBatch& batch,
                                       const MlaParams& params, const TensorView& out) {
  // BF16 queries, and kv_b as the GPU's BF16 copy (the cache is BF16 already).
  std::vector<float> q_buf, w_buf;
  LinearWeight kv_b16;
  kv_b16.weight = EmulatedInput(kv_b.weight, false, w_buf);
  inner().MlaAttention(EmulatedInput(q, false, q_buf), cache, kv_b16, batch, params, out);
}

void GpuEmulationBackend::MoeRoute(const TensorView& x, const TensorView& router,
                                   const TensorView& bias, const MoeRouteParams& params,
                                   const TensorView& topk_ids, const TensorView& topk_weights) {
  std::vector<float> x_buf, router_buf;  // BF16 x and router weights, as on the GPU
  inner().MoeRoute(EmulatedInput(x, false, x_buf), EmulatedInput(router, false, router_buf), bias,
                   params, topk_ids, topk_weights);
}

void GpuEmulationBackend::MoeExperts(const TensorView& x, const TensorView& topk_ids,
                                     const TensorView& topk_weights,
                                     std::span<const ExpertWeights> experts, int64_t expert_begin,
                                     const TensorView& out) {
  // The experts' GEMMs and SiLU-gate through this wrapper; their outputs BF16 as on the GPU.
  MoeExpertsOneByOne(*this, x, topk_ids, topk_weights, experts, expert_begin, out,
                     emulation_.bf16_activations ? &RoundToBf16 : +[](float v) { return v; });
}

}  // namespace dsv3
