// The CPU backend's emulation of the CUDA backend's numerics (CpuBackendOptions): FP8 activation
// quantization before FP8 linear layers and BF16 activations between ops.
#include <algorithm>
#include <cassert>
#include <cmath>

#include "engine/backend/cpu/cpu_backend.h"

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

TensorView CpuBackend::EmulatedInput(const TensorView& x, bool fp8,
                                     std::vector<float>& buf) const {
  const bool quantize = fp8 && options_.fp8_activations;
  if (!quantize && !options_.bf16_activations) return x;
  assert(x.ndim == 2 || x.ndim == 3);
  const int64_t d1 = x.dim(1), d2 = x.ndim == 3 ? x.dim(2) : 1;
  const int64_t s1 = x.strides[1], s2 = x.ndim == 3 ? x.strides[2] : 1;
  buf.resize(x.dim(0) * d1 * d2);
  float* o = buf.data();
  for (int64_t i = 0; i < x.dim(0); ++i) {
    for (int64_t j = 0; j < d1; ++j) {
      for (int64_t l = 0; l < d2; ++l) *o++ = In(x.ptr<float>()[i * x.strides[0] + j * s1 + l * s2]);
    }
  }
  const int64_t cols = d1 * d2;
  if (quantize) FakeQuantizeActivations(buf.data(), x.dim(0), cols, cols);
  return x.ndim == 3 ? TensorView::Contiguous(buf.data(), DType::kF32, {x.dim(0), d1, d2})
                     : TensorView::Contiguous(buf.data(), DType::kF32, {x.dim(0), d1});
}

void CpuBackend::NoteFp8(const LinearWeight& w) {
  if (options_.fp8_activations) fp8_weights_.insert(w.weight.data);
}

}  // namespace dsv3
