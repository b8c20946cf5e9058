#include "engine/weights/linear_stack.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/backend/dtype.h"
#include "engine/util/status_macros.h"

namespace dsv3 {

TensorView StackedLinear::Output(const TensorView& y, size_t i) const {
  TensorView v = y;
  v.data = static_cast<char*>(y.data) + parts[i].offset * DTypeSize(y.dtype);
  v.shape[1] = parts[i].n;
  return v;
}

std::optional<LinearWeight> StackedLinear::Weight(size_t i) const {
  const int64_t offset = parts[i].offset;
  LinearWeight w = weight;
  w.weight.data = static_cast<char*>(weight.weight.data) +
                  offset * weight.weight.strides[0] * DTypeSize(weight.weight.dtype);
  w.weight.shape[0] = parts[i].n;
  if (weight.scale_inv.data != nullptr) {
    if (offset % kFp8ScaleBlock != 0) return std::nullopt;
    w.scale_inv.data =
        static_cast<char*>(weight.scale_inv.data) +
        offset / kFp8ScaleBlock * weight.scale_inv.strides[0] * DTypeSize(weight.scale_inv.dtype);
    w.scale_inv.shape[0] = ScaleBlocks(parts[i].n);
  }
  return w;
}

absl::Status LinearStack::Add(const TensorSource& source, const std::string& prefix, int64_t n,
                              int64_t k, int64_t row_begin, int64_t row_end) {
  if (k_ >= 0 && k != k_) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": cannot stack '", prefix, "' (K ", k, ") with parts of K ", k_));
  }
  if (row_begin < 0 || row_begin >= row_end || row_end > n) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": rows [", row_begin, ", ", row_end,
                                                   ") of '", prefix, "' [", n, ", ", k, "]"));
  }
  k_ = k;
  const std::array<int64_t, 2> shape = {n, k};
  DSV3_ASSIGN_OR_RETURN(const TensorView w,
                        source.Get(prefix + ".weight", shape,
                                   {DType::kF8E4M3, DType::kBF16, DType::kF16, DType::kF32}));
  Held h;
  h.prefix = prefix;
  h.row_begin = row_begin;
  h.row_end = row_end;
  if (w.dtype == DType::kF8E4M3) {
    // Whole scale blocks: the held rows start at the block that holds row_begin.
    h.dtype = DType::kF8E4M3;
    h.first = row_begin / kFp8ScaleBlock * kFp8ScaleBlock;
    h.rows = row_end - h.first;
    const int64_t kb = ScaleBlocks(k);
    const std::array<int64_t, 2> scale_shape = {ScaleBlocks(n), kb};
    DSV3_ASSIGN_OR_RETURN(const TensorView s,
                          source.Get(prefix + ".weight_scale_inv", scale_shape, {DType::kF32}));
    const uint8_t* rows = w.ptr<uint8_t>() + h.first * k;
    h.weight.assign(rows, rows + h.rows * k);
    const float* scales = s.ptr<float>() + h.first / kFp8ScaleBlock * kb;
    h.scales.assign(scales, scales + ScaleBlocks(h.rows) * kb);
  } else if (w.dtype == DType::kBF16) {
    h.dtype = DType::kBF16;
    h.first = row_begin;
    h.rows = row_end - row_begin;
    const uint8_t* rows = w.ptr<uint8_t>() + row_begin * k * 2;
    h.weight.assign(rows, rows + h.rows * k * 2);
  } else {  // F16, F32: widened
    DSV3_ASSIGN_OR_RETURN(const std::vector<float> values,
                          source.LoadLinearF32(prefix, n, k, {row_begin, row_end, 0, -1}));
    h.dtype = DType::kF32;
    h.first = row_begin;
    h.rows = row_end - row_begin;
    h.weight.resize(values.size() * sizeof(float));
    std::memcpy(h.weight.data(), values.data(), h.weight.size());
  }
  parts_.push_back(std::move(h));
  return absl::OkStatus();
}

absl::StatusOr<LinearStack::Built> LinearStack::Build() const {
  if (parts_.empty()) return absl::InvalidArgumentError(absl::StrCat(name_, ": nothing stacked"));
  const int64_t k = k_, kb = ScaleBlocks(k);
  const DType first_dtype = parts_.front().dtype;
  const bool same = std::all_of(parts_.begin(), parts_.end(),
                                [&](const Held& h) { return h.dtype == first_dtype; });
  const DType dtype = same ? first_dtype : DType::kF32;
  const bool fp8 = dtype == DType::kF8E4M3;
  // Each part's first row in the stack: FP8 parts start on block boundaries.
  std::vector<int64_t> start;
  int64_t rows = 0;
  for (const Held& h : parts_) {
    start.push_back(rows);
    rows += fp8 ? ScaleBlocks(h.rows) * kFp8ScaleBlock : h.rows;
  }
  Built b;
  b.weight = Tensor(HostAllocator(), dtype, {rows, k});
  const int64_t row_bytes = k * DTypeSize(dtype);
  std::memset(b.weight.view().data, 0, rows * row_bytes);
  if (fp8) {
    b.scale_inv = Tensor(HostAllocator(), DType::kF32, {rows / kFp8ScaleBlock, kb});
    std::fill_n(b.scale_inv.ptr<float>(), rows / kFp8ScaleBlock * kb, 1.0f);
  }
  for (size_t i = 0; i < parts_.size(); ++i) {
    const Held& h = parts_[i];
    uint8_t* dst = b.weight.ptr<uint8_t>() + start[i] * row_bytes;
    if (h.dtype == dtype) {
      std::memcpy(dst, h.weight.data(), h.weight.size());
      if (fp8) {
        std::copy(h.scales.begin(), h.scales.end(),
                  b.scale_inv.ptr<float>() + start[i] / kFp8ScaleBlock * kb);
      }
    } else {
      // Mixed dtypes: this part widened to float32 (dequantized with its own block scales).
      float* out = reinterpret_cast<float*>(dst);
      if (h.dtype == DType::kF8E4M3) {
        DequantizeFp8Blocks(h.weight.data(), h.rows, k, h.scales.data(), kFp8ScaleBlock,
                            kFp8ScaleBlock, 0, h.rows, 0, k, out);
      } else if (h.dtype == DType::kBF16) {
        const uint16_t* in = reinterpret_cast<const uint16_t*>(h.weight.data());
        for (int64_t j = 0; j < h.rows * k; ++j) out[j] = Bf16ToF32(in[j]);
      } else {
        std::memcpy(out, h.weight.data(), h.weight.size());
      }
    }
    b.parts.push_back({start[i] + (h.row_begin - h.first), h.row_end - h.row_begin});
  }
  return b;
}

}  // namespace dsv3
