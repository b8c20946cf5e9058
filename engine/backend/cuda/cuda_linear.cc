// Linear layers on the GPU: FP8 weights after a 1x128 activation quantization (SPEC section 4),
// through the small-M tensor-core kernel for a few rows and cuBLASLt block scaling beyond, BF16
// weights through a plain BF16 GEMM.
#include <cstdio>

#include "engine/backend/cuda/cuda_backend.h"
#include "engine/util/status_macros.h"
#include "kernels/elementwise.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/launch_check.h"
#include "kernels/moe_grouped.cuh"

namespace dsv3 {

TensorView CudaBackend::Bf16Weight(const LinearWeight& w) {
  if (w.weight.dtype == DType::kBF16) return w.weight;
  auto it = dequantized_.find(w.weight.data);
  if (it == dequantized_.end()) {
    Tensor t(allocator(), DType::kBF16, {w.n(), w.k()});  // [N, K]
    kernels::DequantizeFp8({w.weight.ptr<uint8_t>(), w.weight.strides[0], w.scale_inv.ptr<float>(),
                            w.scale_inv.strides[0], w.n(), w.k(), t.view().data, w.k()},
                           stream_);
    CountAsWeight(t);  // dropped with its weight
    it = dequantized_.emplace(w.weight.data, std::move(t)).first;
  }
  return it->second.view();
}

void CudaBackend::Bf16Linear(const TensorView& x, const TensorView& w, const TensorView& y,
                             bool add_to_y) {
  assert(x.dtype == DType::kBF16 && w.dtype == DType::kBF16);
  assert(y.dtype == DType::kBF16 || y.dtype == DType::kF32);
  // Column-major: y^T [N, M] = W [N, K] (stored K x N, transposed) x^T [K, M].
  Bf16GemmArgs g;
  g.trans_a = true;
  g.m = w.dim(0);
  g.n = x.dim(0);
  g.k = w.dim(1);
  g.a = w.data;
  g.lda = w.strides[0];
  g.b = x.data;
  g.ldb = x.strides[0];
  g.d = y.data;
  g.ldd = y.strides[0];
  g.d_f32 = y.dtype == DType::kF32;
  g.add_to_d = add_to_y;
  Check(gemm_->Bf16(g), "BF16 linear");
}

void CudaBackend::Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) {
  const int64_t m = x.dim(0);
  assert(x.dim(1) == w.k() && y.dim(0) == m && y.dim(1) == w.n() && x.dtype == DType::kBF16);
  if (m == 0) return;
  if (w.weight.dtype == DType::kBF16) {
    Bf16Linear(x, w.weight, y);
    return;
  }
  Fp8Linear(x, w, y, [&](uint8_t* xq, float* xs, int64_t m_pad, int64_t k_pad) {
    QuantizeRows(x, xq, xs, m_pad, k_pad);
  });
}

void CudaBackend::LinearAdd(const TensorView& x, const LinearWeight& w, const TensorView& y) {
  const int64_t m = x.dim(0), n = w.n();
  assert(x.dim(1) == w.k() && y.dim(0) == m && y.dim(1) == n && x.dtype == DType::kBF16);
  const int64_t m_pad = RoundUp(m, 4), n_pad = RoundUp(n, 64);
  const bool fp8 = w.weight.dtype == DType::kF8E4M3;
  // cuBLASLt adds y in its epilogue where it writes y itself: F32 y (one rounding, as the parts
  // round) of the GEMM's own shape, beyond the small-M kernel's rows (that kernel only writes).
  if (m == 0 || y.dtype != DType::kF32 ||
      (fp8 && (m <= kSmallFp8Rows || m_pad != m || n_pad != n))) {
    Backend::LinearAdd(x, w, y);
    return;
  }
  if (!fp8) {
    Bf16Linear(x, w.weight, y, /*add_to_y=*/true);
    return;
  }
  const int64_t k_pad = w.weight.strides[0];
  Tensor xq(allocator(), DType::kF8E4M3, {m_pad, k_pad});      // [M_pad, K_pad]
  Tensor xs(allocator(), DType::kF32, {k_pad / 128, m_pad});   // [K_pad/128, M_pad]
  Section path(*this, "- linear fp8: cuBLASLt, adding");
  QuantizeRows(x, xq.ptr<uint8_t>(), xs.ptr<float>(), m_pad, k_pad);
  // No F32-out kernel for the shape (cuBLASLt refuses before launching): the parts.
  if (!Fp8Gemm(xq, xs, w, m, m_pad, n_pad, k_pad, /*f32_out=*/true, y, /*add_to_y=*/true).ok()) {
    Backend::LinearAdd(x, w, y);
  }
}

void CudaBackend::QuantizeRows(const TensorView& x, uint8_t* xq, float* xs, int64_t m_pad,
                               int64_t k_pad) {
  kernels::QuantizeActivations({x.data, x.strides[0], x.dim(0), x.dim(1), m_pad, k_pad, xq, xs,
                                options_.ue8m0_activation_scales},
                               stream_);
}

void CudaBackend::RmsNormLinear(const TensorView& x, const TensorView* branch,
                                const TensorView& norm_weight, float eps,
                                const TensorView& normed, const LinearWeight& w,
                                const TensorView& y) {
  const int64_t m = x.dim(0);
  if (!FusesNorms(m) || w.weight.dtype != DType::kF8E4M3 || normed.dtype != DType::kBF16 ||
      m == 0) {
    Backend::RmsNormLinear(x, branch, norm_weight, eps, normed, w, y);
    return;
  }
  assert(x.dim(1) == w.k() && normed.dim(0) == m && normed.dim(1) == w.k());
  const kernels::RmsNormParams norm = NormParams(x, branch, norm_weight, eps, normed);
  Fp8Linear(normed, w, y, [&](uint8_t* xq, float* xs, int64_t m_pad, int64_t k_pad) {
    kernels::RmsNormQuantize({norm, xq, xs, m_pad, k_pad, options_.ue8m0_activation_scales},
                             stream_);
  });
}

void CudaBackend::Fp8Linear(const TensorView& x, const LinearWeight& w, const TensorView& y,
                            QuantizeInto quantize, const kernels::RopeEpilogue* rope) {
  const int64_t m = x.dim(0), n = w.n();
  const int64_t m_pad = RoundUp(m, 4), n_pad = RoundUp(n, 64), k_pad = w.weight.strides[0];
  assert(!w.k_block_major);  // a routed expert's: MoE ops only (PrepareRoutedExperts)
  Tensor xq(allocator(), DType::kF8E4M3, {m_pad, k_pad});      // [M_pad, K_pad]
  Tensor xs(allocator(), DType::kF32, {k_pad / 128, m_pad});   // [K_pad/128, M_pad]
  Section path(*this, m <= kSmallFp8Rows ? "- linear fp8: small-M kernel" : "- linear fp8: cuBLASLt");
  quantize(xq.ptr<uint8_t>(), xs.ptr<float>(), m_pad, k_pad);
  assert(rope == nullptr || m <= kSmallFp8Rows);
  if (m <= kSmallFp8Rows) {
    assert((y.dtype == DType::kBF16 || y.dtype == DType::kF32) && y.strides[1] == 1);
    kernels::DenseFp8GemmParams g{xq.ptr<uint8_t>(), xs.ptr<float>(), m, m_pad, k_pad,
                                  {w.weight.ptr<uint8_t>(), w.scale_inv.ptr<float>()}, n,
                                  w.scale_inv.strides[0], y.data, y.strides[0],
                                  y.dtype == DType::kF32};
    if (rope != nullptr) g.rope = *rope;
    kernels::DenseFp8Gemm(g, stream_);
    return;
  }
  // cuBLASLt writes [M_pad, N_pad] in y's type (F32 partial sums stay unrounded for the
  // all-reduce): straight into y when that is y's shape, else into a scratch copied into y.
  const bool f32_out = y.dtype == DType::kF32;
  absl::Status status = Fp8Gemm(xq, xs, w, m, m_pad, n_pad, k_pad, f32_out, y);
  if (!status.ok() && f32_out) {
    // No F32-out kernel for this shape: BF16 out, converted (rounded once more).
    static bool warned = false;
    if (!warned) {
      std::fprintf(stderr, "CUDA backend: %s; rounding to BF16 there\n",
                   std::string(status.message()).c_str());
      warned = true;
    }
    status = Fp8Gemm(xq, xs, w, m, m_pad, n_pad, k_pad, false, y);
  }
  if (!status.ok()) {
    // No block-scaled kernel for this shape: dequantized BF16 weight instead.
    static bool warned = false;
    if (!warned) {
      std::fprintf(stderr, "CUDA backend: %s; using BF16 weights there\n",
                   std::string(status.message()).c_str());
      warned = true;
    }
    Bf16Linear(x, Bf16Weight(w), y);
  }
}

absl::Status CudaBackend::Fp8Gemm(const Tensor& xq, const Tensor& xs, const LinearWeight& w,
                                  int64_t m, int64_t m_pad, int64_t n_pad, int64_t k_pad,
                                  bool f32_out, const TensorView& y, bool add_to_y) {
  const int64_t n = w.n();
  const DType d_type = f32_out ? DType::kF32 : DType::kBF16;
  const bool direct = y.dtype == d_type && m_pad == m && n_pad == n;
  assert(direct || !add_to_y);
  Tensor d;
  if (!direct) d = Tensor(allocator(), d_type, {m_pad, n_pad});
  Fp8GemmArgs g{w.weight.data, w.scale_inv.ptr<float>(), n_pad, k_pad, xq.view().data,
                xs.ptr<float>(), m_pad, direct ? y.data : d.view().data,
                direct ? y.strides[0] : n_pad, f32_out, add_to_y};
  DSV3_RETURN_IF_ERROR(gemm_->Fp8(g));
  if (!direct) {
    kernels::Copy2D({d.view().data, n_pad, ElemTypeOf(d_type), y.data, y.strides[0],
                     ElemTypeOf(y.dtype), m, n},
                    stream_);
  }
  return absl::OkStatus();
}

}  // namespace dsv3
