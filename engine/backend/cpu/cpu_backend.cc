#include "engine/backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/weights/checkpoint.h"

namespace dsv3 {

void SgemmNT(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc, float beta) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

void SgemmNN(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), 0.0f,
              c, static_cast<int>(ldc));
}

CpuBackend::CpuBackend(int num_threads) : pool_(num_threads) {}

absl::StatusOr<LinearWeight> CpuBackend::LoadLinear(const TensorSource& ckpt,
                                                    const std::string& prefix, int64_t n,
                                                    int64_t k, const Slice2D& slice,
                                                    std::vector<Tensor>& storage) {
  auto values = ckpt.LoadLinearF32(prefix, n, k, slice);
  if (!values.ok()) return values.status();
  const int64_t rows = (slice.row_end < 0 ? n : slice.row_end) - slice.row_begin;
  const int64_t cols = (slice.col_end < 0 ? k : slice.col_end) - slice.col_begin;
  Tensor t(HostAllocator(), DType::kF32, {rows, cols});
  std::memcpy(t.ptr<float>(), values->data(), sizeof(float) * rows * cols);
  LinearWeight w;
  w.weight = t.view();
  storage.push_back(std::move(t));
  return w;
}

absl::StatusOr<TensorView> CpuBackend::LoadDense(const TensorSource& ckpt, const std::string& name,
                                                 std::span<const int64_t> shape,
                                                 std::vector<Tensor>& storage) {
  auto values = ckpt.LoadF32(name, shape);
  if (!values.ok()) return values.status();
  Tensor t(HostAllocator(), DType::kF32, shape.data(), static_cast<int>(shape.size()));
  std::memcpy(t.ptr<float>(), values->data(), sizeof(float) * values->size());
  TensorView v = t.view();
  storage.push_back(std::move(t));
  return v;
}

absl::StatusOr<LinearWeight> CpuBackend::MakeLinear(const TensorView& weight,
                                                    const TensorView& scale_inv,
                                                    std::vector<Tensor>& storage) {
  const int64_t n = weight.dim(0), k = weight.dim(1);
  if (weight.ndim != 2 || !weight.is_contiguous()) {
    return absl::InvalidArgumentError("MakeLinear: weight must be a contiguous 2-D tensor");
  }
  Tensor t(HostAllocator(), DType::kF32, {n, k});
  float* out = t.ptr<float>();
  switch (weight.dtype) {
    case DType::kF8E4M3:
      if (scale_inv.empty() || scale_inv.dtype != DType::kF32 ||
          scale_inv.numel() != ScaleBlocks(n) * ScaleBlocks(k)) {
        return absl::InvalidArgumentError("MakeLinear: FP8 weight needs F32 block scales");
      }
      DequantizeFp8Blocks(weight.ptr<uint8_t>(), n, k, scale_inv.ptr<float>(), kFp8ScaleBlock,
                          kFp8ScaleBlock, 0, n, 0, k, out);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n * k; ++i) out[i] = Bf16ToF32(weight.ptr<uint16_t>()[i]);
      break;
    case DType::kF32:
      std::memcpy(out, weight.data, sizeof(float) * n * k);
      break;
    default:
      return absl::InvalidArgumentError("MakeLinear: weight must be F8_E4M3, BF16 or F32");
  }
  LinearWeight w;
  w.weight = t.view();
  storage.push_back(std::move(t));
  return w;
}

Tensor CpuBackend::Upload(const TensorView& host) {
  assert((host.dtype == DType::kF32 || host.dtype == DType::kI32) && host.is_contiguous());
  Tensor t(HostAllocator(), host.dtype, host.shape.data(), host.ndim);
  if (host.nbytes() > 0) std::memcpy(t.view().data, host.data, host.nbytes());  // may be null
  return t;
}

void CpuBackend::Download(const TensorView& t, float* host) {
  assert(t.dtype == DType::kF32 && t.is_contiguous());
  if (t.nbytes() > 0) std::memcpy(host, t.data, t.nbytes());  // an empty vector's data() is null
}

void CpuBackend::CopyToHost(const TensorView& src, void* host) {
  assert(src.is_contiguous());
  if (src.nbytes() > 0) std::memcpy(host, src.data, src.nbytes());
}

void CpuBackend::CopyFromHost(const void* host, const TensorView& dst) {
  assert(dst.is_contiguous());
  if (dst.nbytes() > 0) std::memcpy(dst.data, host, dst.nbytes());
}

void CpuBackend::Embedding(const TensorView& table, std::span<const int32_t> ids,
                           int64_t first_row, const TensorView& out) {
  const int64_t h = table.dim(1), rows = table.dim(0);
  for (size_t t = 0; t < ids.size(); ++t) {
    float* dst = out.ptr<float>() + t * out.strides[0];
    const int64_t local = ids[t] - first_row;
    if (local < 0 || local >= rows) {
      std::fill(dst, dst + h, 0.0f);
    } else {
      const float* src = table.ptr<float>() + local * table.strides[0];
      std::copy(src, src + h, dst);
    }
  }
}

void CpuBackend::RmsNorm(const TensorView& x, const TensorView& weight, float eps,
                         const TensorView& out) {
  const int64_t m = x.dim(0), d = x.dim(1);
  const float* w = weight.ptr<float>();
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x.ptr<float>() + r * x.strides[0];
    float* yr = out.ptr<float>() + r * out.strides[0];
    double sum = 0;
    for (int64_t i = 0; i < d; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum / d + eps));
    for (int64_t i = 0; i < d; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void CpuBackend::Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) {
  assert(w.weight.dtype == DType::kF32 && x.dim(1) == w.k() && y.dim(1) == w.n());
  SgemmNT(x.dim(0), w.n(), w.k(), x.ptr<float>(), x.strides[0], w.weight.ptr<float>(),
          w.weight.strides[0], y.ptr<float>(), y.strides[0]);
}

void CpuBackend::Add(const TensorView& a, const TensorView& b, const TensorView& out) {
  const int64_t m = a.dim(0), d = a.dim(1);
  for (int64_t r = 0; r < m; ++r) {
    const float* ar = a.ptr<float>() + r * a.strides[0];
    const float* br = b.ptr<float>() + r * b.strides[0];
    float* o = out.ptr<float>() + r * out.strides[0];
    for (int64_t i = 0; i < d; ++i) o[i] = ar[i] + br[i];
  }
}

void CpuBackend::Rope(const TensorView& x, std::span<const int32_t> positions,
                      const RopeParams& rope) {
  // x [T, heads, d]. Angles in float32 as transformers computes them (inv_freq * position).
  const int64_t tokens = x.dim(0), heads = x.dim(1), half = rope.rope_dim / 2;
  std::vector<float> cos_t(half), sin_t(half);
  for (int64_t t = 0; t < tokens; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = rope.inv_freq[i] * pos;
      cos_t[i] = std::cos(angle) * rope.attention_factor;
      sin_t[i] = std::sin(angle) * rope.attention_factor;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x.ptr<float>() + t * x.strides[0] + h * x.strides[1];
      for (int64_t i = 0; i < half; ++i) {
        float* a = rope.interleaved ? &v[2 * i] : &v[i];
        float* b = rope.interleaved ? &v[2 * i + 1] : &v[i + half];
        const float x0 = *a, x1 = *b;
        *a = x0 * cos_t[i] - x1 * sin_t[i];
        *b = x1 * cos_t[i] + x0 * sin_t[i];
      }
    }
  }
}

void CpuBackend::SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) {
  const int64_t m = gate.dim(0), d = gate.dim(1);
  for (int64_t r = 0; r < m; ++r) {
    const float* g = gate.ptr<float>() + r * gate.strides[0];
    const float* u = up.ptr<float>() + r * up.strides[0];
    float* o = out.ptr<float>() + r * out.strides[0];
    for (int64_t i = 0; i < d; ++i) {
      o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  }
}

void CpuBackend::Copy(const TensorView& src, const TensorView& dst) {
  assert(src.dim(0) == dst.dim(0) && src.dim(1) == dst.dim(1));
  for (int64_t r = 0; r < src.dim(0); ++r) {
    std::memcpy(dst.ptr<float>() + r * dst.strides[0], src.ptr<float>() + r * src.strides[0],
                sizeof(float) * src.dim(1));
  }
}

void CpuBackend::GatherRows(const TensorView& x, std::span<const int32_t> rows,
                            const TensorView& out) {
  const int64_t d = x.dim(1);
  for (size_t r = 0; r < rows.size(); ++r) {
    std::memcpy(out.ptr<float>() + r * out.strides[0], x.ptr<float>() + rows[r] * x.strides[0],
                sizeof(float) * d);
  }
}

void CpuBackend::ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                                const TensorView& out) {
  assert(x.dtype == DType::kF32 && out.dtype == DType::kF32);
  assert(static_cast<int64_t>(index.size()) == x.dim(0) && x.dim(1) == out.dim(1));
  const int64_t d = out.dim(1);
  for (int64_t i = 0; i < out.dim(0); ++i) {
    std::fill_n(out.ptr<float>() + i * out.strides[0], d, 0.0f);
  }
  for (size_t r = 0; r < index.size(); ++r) {
    const float* src = x.ptr<float>() + r * x.strides[0];
    float* dst = out.ptr<float>() + index[r] * out.strides[0];
    for (int64_t c = 0; c < d; ++c) dst[c] += src[c];
  }
}

void CpuBackend::PadRows(const TensorView& x, float fill, const TensorView& out) {
  const int64_t t = x.dim(0), d = x.dim(1), elem = DTypeSize(out.dtype);
  assert(x.dtype == out.dtype && t <= out.dim(0) && d == out.dim(1) && (elem == 2 || elem == 4));
  assert(out.dtype == DType::kI32 || out.dtype == DType::kBF16 || out.dtype == DType::kF32);
  // fill as one element of out's type: its first `elem` bytes (little-endian)
  const uint32_t bits = ElementBits(out.dtype, fill);
  char pattern[4];
  std::memcpy(pattern, &bits, 4);
  for (int64_t r = 0; r < out.dim(0); ++r) {
    char* dst = static_cast<char*>(out.data) + r * out.strides[0] * elem;
    if (r < t) {
      std::memcpy(dst, static_cast<const char*>(x.data) + r * x.strides[0] * elem, d * elem);
      continue;
    }
    for (int64_t c = 0; c < d; ++c) std::memcpy(dst + c * elem, pattern, elem);
  }
}

void CpuBackend::SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) {
  assert(x.dtype == DType::kF32 && out.dtype == DType::kF32 && blocks > 0);
  const int64_t block_rows = x.dim(0) / blocks, d = out.dim(1);
  assert(block_rows * blocks == x.dim(0) && out.dim(0) <= block_rows && x.dim(1) == d);
  for (int64_t i = 0; i < out.dim(0); ++i) {
    float* dst = out.ptr<float>() + i * out.strides[0];
    std::fill_n(dst, d, 0.0f);
    for (int64_t b = 0; b < blocks; ++b) {
      const float* src = x.ptr<float>() + (b * block_rows + i) * x.strides[0];
      for (int64_t c = 0; c < d; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace dsv3
