#include "engine/weights/tensor_source.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dsv3 {

namespace {

// All 256 E4M3 codes as float: dequantization is then one load and one multiply per weight.
const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = Fp8E4M3ToF32(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

// Element i of a F32/BF16/F16 buffer. memcpy because safetensors does not promise alignment.
float LoadFloat(const uint8_t* base, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, base + 4 * i, 4);
      return f;
    }
    case DType::kBF16:
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, base + 2 * i, 2);
      return dtype == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
    }
    default:
      return 0.0f;  // callers only pass float dtypes (checked by Get)
  }
}

}  // namespace

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<TensorView> TensorSource::Get(std::string_view name, std::span<const int64_t> shape,
                                             std::initializer_list<DType> allowed) const {
  absl::StatusOr<TensorView> view = Get(name);
  if (!view.ok()) return view.status();
  const std::span<const int64_t> stored(view->shape.data(), static_cast<size_t>(view->ndim));
  const std::string file = FileOf(name);
  const std::string name_str(name);
  if (!std::equal(stored.begin(), stored.end(), shape.begin(), shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", name_str, "': shape ",
                                                   ShapeString(stored), ", expected ",
                                                   ShapeString(shape)));
  }
  if (std::find(allowed.begin(), allowed.end(), view->dtype) == allowed.end()) {
    std::vector<std::string> names;
    for (DType t : allowed) names.emplace_back(DTypeName(t));
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor '", name_str, "': dtype ", std::string(DTypeName(view->dtype)),
                     ", expected one of ", absl::StrJoin(names, ", ")));
  }
  return view;
}

absl::StatusOr<std::vector<float>> TensorSource::LoadF32(std::string_view name,
                                                         std::span<const int64_t> shape) const {
  absl::StatusOr<TensorView> view = Get(name, shape, {DType::kF32, DType::kBF16, DType::kF16});
  if (!view.ok()) return view.status();
  const int64_t n = view->numel();
  std::vector<float> out(static_cast<size_t>(n));
  const auto* base = static_cast<const uint8_t*>(view->data);
  if (view->dtype == DType::kF32) {
    std::memcpy(out.data(), base, static_cast<size_t>(n) * 4);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = LoadFloat(base, view->dtype, i);
  }
  return out;
}

absl::StatusOr<std::vector<float>> TensorSource::LoadLinearF32(std::string_view prefix, int64_t n,
                                                               int64_t k, const Slice2D& slice,
                                                               int64_t block_n,
                                                               int64_t block_k) const {
  const std::string name = std::string(prefix) + ".weight";
  const std::array<int64_t, 2> shape = {n, k};
  absl::StatusOr<TensorView> w =
      Get(name, shape, {DType::kF8E4M3, DType::kBF16, DType::kF16, DType::kF32});
  if (!w.ok()) return w.status();
  const int64_t r0 = slice.row_begin, r1 = slice.row_end < 0 ? n : slice.row_end;
  const int64_t c0 = slice.col_begin, c1 = slice.col_end < 0 ? k : slice.col_end;
  if (r0 < 0 || r0 > r1 || r1 > n || c0 < 0 || c0 > c1 || c1 > k || block_n <= 0 || block_k <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        FileOf(name), ": tensor '", name, "': bad slice of [", n, ", ", k, "]: rows [", r0, ", ",
        r1, "), cols [", c0, ", ", c1, "), block [", block_n, ", ", block_k, "]"));
  }
  const auto* base = static_cast<const uint8_t*>(w->data);
  std::vector<float> out(static_cast<size_t>((r1 - r0) * (c1 - c0)));

  if (w->dtype != DType::kF8E4M3) {
    float* o = out.data();
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = c0; c < c1; ++c) *o++ = LoadFloat(base, w->dtype, r * k + c);
    }
    return out;
  }

  // scale_inv: [ceil(n/block_n), ceil(k/block_k)], F32 as DeepSeek ships it (BF16 accepted).
  const std::string scale_name = std::string(prefix) + ".weight_scale_inv";
  if (!Has(scale_name)) {
    return absl::NotFoundError(absl::StrCat(FileOf(name), ": tensor '", name,
                                            "': F8_E4M3 weight without '", scale_name, "'"));
  }
  const std::array<int64_t, 2> scale_shape = {(n + block_n - 1) / block_n,
                                              (k + block_k - 1) / block_k};
  absl::StatusOr<std::vector<float>> scale = LoadF32(scale_name, scale_shape);
  if (!scale.ok()) return scale.status();
  DequantizeFp8Blocks(base, n, k, scale->data(), block_n, block_k, r0, r1, c0, c1, out.data());
  return out;
}

void DequantizeFp8Blocks(const uint8_t* fp8, int64_t n, int64_t k, const float* scale_inv,
                         int64_t bn, int64_t bk, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                         float* out) {
  const std::array<float, 256>& table = Fp8Table();
  const int64_t scale_cols = (k + bk - 1) / bk;
  const int64_t width = c1 - c0;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* src = fp8 + r * k;
    const float* srow = scale_inv + (r / bn) * scale_cols;
    float* dst = out + (r - r0) * width;
    // Walk the row one column block at a time so the scale is loaded once per block.
    for (int64_t c = c0; c < c1;) {
      const int64_t block_end = std::min(c1, (c / bk + 1) * bk);
      const float s = srow[c / bk];
      for (; c < block_end; ++c) dst[c - c0] = table[src[c]] * s;
    }
  }
}

}  // namespace dsv3
