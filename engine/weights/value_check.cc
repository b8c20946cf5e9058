#include "engine/weights/value_check.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace dsv3 {

namespace {

// Element i of a float buffer as "NaN", "Inf" or nullptr (finite), from the exponent bits
// alone: all ones is Inf (zero mantissa) or NaN. memcpy: safetensors does not align data.
const char* NonFinite(const uint8_t* base, DType dtype, int64_t i) {
  uint32_t exp_mask = 0, man_mask = 0, bits = 0;
  switch (dtype) {
    case DType::kF32:
      std::memcpy(&bits, base + 4 * i, 4);
      exp_mask = 0x7F800000u, man_mask = 0x007FFFFFu;
      break;
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, base + 2 * i, 2);
      bits = h, exp_mask = 0x7F80u, man_mask = 0x007Fu;
      break;
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, base + 2 * i, 2);
      bits = h, exp_mask = 0x7C00u, man_mask = 0x03FFu;
      break;
    }
    default:
      return nullptr;
  }
  if ((bits & exp_mask) != exp_mask) return nullptr;
  return (bits & man_mask) != 0 ? "NaN" : "Inf";
}

bool IsFloat(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

// e4m3fn: S.1111.111 is NaN; there is no Inf.
bool IsFp8NaN(uint8_t b) { return (b & 0x7F) == 0x7F; }

absl::Status BadElement(const Checkpoint& ckpt, const std::string& name, const std::string& where,
                        const char* what) {
  return absl::InvalidArgumentError(absl::StrCat(ckpt.FileOf(name), ": tensor '", name,
                                                 "': element ", where, " is ", what,
                                                 " (weights must be finite)"));
}

}  // namespace

absl::Status CheckFiniteTensor(const Checkpoint& ckpt, std::string_view name) {
  const absl::StatusOr<TensorView> view = ckpt.Get(name);
  if (!view.ok() || !IsFloat(view->dtype)) return absl::OkStatus();
  const auto* base = static_cast<const uint8_t*>(view->data);
  const int64_t n = view->numel();
  for (int64_t i = 0; i < n; ++i) {
    if (const char* what = NonFinite(base, view->dtype, i)) {
      return BadElement(ckpt, std::string(name), absl::StrCat(i), what);
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLinearValues(const Checkpoint& ckpt, std::string_view prefix, int64_t n,
                               int64_t k, const Slice2D& slice) {
  const std::string name = std::string(prefix) + ".weight";
  const absl::StatusOr<TensorView> w = ckpt.Get(name);
  // Shapes and slices are the loader's to check; only a weight of the expected shape is scanned.
  if (!w.ok() || w->ndim != 2 || w->dim(0) != n || w->dim(1) != k) return absl::OkStatus();
  const int64_t r0 = slice.row_begin, r1 = slice.row_end < 0 ? n : slice.row_end;
  const int64_t c0 = slice.col_begin, c1 = slice.col_end < 0 ? k : slice.col_end;
  if (r0 < 0 || r0 > r1 || r1 > n || c0 < 0 || c0 > c1 || c1 > k) return absl::OkStatus();

  const auto* base = static_cast<const uint8_t*>(w->data);
  if (w->dtype == DType::kF8E4M3) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = base + r * k;
      for (int64_t c = c0; c < c1; ++c) {
        if (IsFp8NaN(row[c])) {
          return BadElement(ckpt, name, absl::StrCat("[", r, ", ", c, "]"), "an FP8 NaN code");
        }
      }
    }
    return CheckFiniteTensor(ckpt, std::string(prefix) + ".weight_scale_inv");
  }
  if (!IsFloat(w->dtype)) return absl::OkStatus();
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) {
      if (const char* what = NonFinite(base, w->dtype, r * k + c)) {
        return BadElement(ckpt, name, absl::StrCat("[", r, ", ", c, "]"), what);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace dsv3
