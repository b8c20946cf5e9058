#include "engine/weights/value_check.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace dsv3 {

namespace {

// Elements per branch-free block: big enough to vectorize, small enough to stay in L1.
constexpr int64_t kBlock = 4096;

// The exponent and mantissa masks of a float dtype's bit pattern (as uint32).
struct FloatBits {
  uint32_t exp_mask = 0, man_mask = 0;
  int size = 0;
};

FloatBits BitsOf(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return {0x7F800000u, 0x007FFFFFu, 4};
    case DType::kBF16:
      return {0x7F80u, 0x007Fu, 2};
    case DType::kF16:
      return {0x7C00u, 0x03FFu, 2};
    default:
      return {};
  }
}

uint32_t LoadBits(const uint8_t* p, int size) {
  if (size == 4) {
    uint32_t b;
    std::memcpy(&b, p, 4);  // safetensors does not align data
    return b;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// Whether any of elements [b, e) of `p` (of type Bits) has an all-ones exponent. No branch in
// the loop, and the element size a compile-time constant, so the compiler vectorizes it.
template <typename Bits>
bool AnyNonFinite(const uint8_t* p, int64_t b, int64_t e, uint32_t exp_mask) {
  const Bits mask = static_cast<Bits>(exp_mask);
  Bits hit = 0;
  for (int64_t i = b; i < e; ++i) {
    Bits v;
    std::memcpy(&v, p + i * sizeof(Bits), sizeof(Bits));
    hit |= static_cast<Bits>((v & mask) == mask);
  }
  return hit != 0;
}

// The first of `n` elements at `p` whose exponent is all ones (NaN or Inf), or -1. Blocks are
// tested without branches; only a block with a hit is searched.
int64_t FirstNonFinite(const uint8_t* p, int64_t n, const FloatBits& f) {
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    const bool hit = f.size == 4 ? AnyNonFinite<uint32_t>(p, b, e, f.exp_mask)
                                 : AnyNonFinite<uint16_t>(p, b, e, f.exp_mask);
    if (!hit) continue;
    for (int64_t i = b; i < e; ++i) {
      if ((LoadBits(p + i * f.size, f.size) & f.exp_mask) == f.exp_mask) return i;
    }
  }
  return -1;
}

// e4m3fn: S.1111.111 is NaN; there is no Inf. The first NaN code of `n` bytes, or -1.
int64_t FirstFp8NaN(const uint8_t* p, int64_t n) {
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    uint8_t hit = 0;
    for (int64_t i = b; i < e; ++i) hit |= static_cast<uint8_t>((p[i] & 0x7F) == 0x7F);
    if (hit == 0) continue;
    for (int64_t i = b; i < e; ++i) {
      if ((p[i] & 0x7F) == 0x7F) return i;
    }
  }
  return -1;
}

const char* Describe(const uint8_t* p, int64_t i, const FloatBits& f) {
  return (LoadBits(p + i * f.size, f.size) & f.man_mask) != 0 ? "NaN" : "Inf";
}

bool IsFloat(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

absl::Status BadElement(const TensorSource& source, const std::string& name,
                        const std::string& where, const char* what) {
  return absl::InvalidArgumentError(absl::StrCat(source.FileOf(name), ": tensor '", name,
                                                 "': element ", where, " is ", what,
                                                 " (weights must be finite)"));
}

// CheckFiniteTensor, where the source's element 0 is element `origin` of the checkpoint's.
absl::Status CheckFinite(const TensorSource& source, std::string_view name, int64_t origin) {
  const absl::StatusOr<TensorView> view = source.Get(name);
  if (!view.ok() || !IsFloat(view->dtype)) return absl::OkStatus();
  const auto* base = static_cast<const uint8_t*>(view->data);
  const FloatBits f = BitsOf(view->dtype);
  if (const int64_t i = FirstNonFinite(base, view->numel(), f); i >= 0) {
    return BadElement(source, std::string(name), absl::StrCat(origin + i), Describe(base, i, f));
  }
  return absl::OkStatus();
}

}  // namespace

bool AnyNonFinite(const uint8_t* p, int64_t n, DType dtype) {
  if (dtype == DType::kF8E4M3) return FirstFp8NaN(p, n) >= 0;
  if (!IsFloat(dtype)) return false;
  return FirstNonFinite(p, n, BitsOf(dtype)) >= 0;
}

absl::Status CheckFiniteTensor(const TensorSource& source, std::string_view name) {
  return CheckFinite(source, name, 0);
}

absl::Status CheckLinearValues(const TensorSource& source, std::string_view prefix, int64_t n,
                               int64_t k, const Slice2D& slice, int64_t row_origin) {
  const std::string name = std::string(prefix) + ".weight";
  const absl::StatusOr<TensorView> w = source.Get(name);
  // Shapes and slices are the loader's to check; only a weight of the expected shape is scanned.
  if (!w.ok() || w->ndim != 2 || w->dim(0) != n || w->dim(1) != k) return absl::OkStatus();
  const int64_t r0 = slice.row_begin, r1 = slice.row_end < 0 ? n : slice.row_end;
  const int64_t c0 = slice.col_begin, c1 = slice.col_end < 0 ? k : slice.col_end;
  if (r0 < 0 || r0 > r1 || r1 > n || c0 < 0 || c0 > c1 || c1 > k) return absl::OkStatus();

  const auto* base = static_cast<const uint8_t*>(w->data);
  auto where = [&](int64_t r, int64_t c) {
    return absl::StrCat("[", row_origin + r, ", ", c, "]");
  };
  if (w->dtype == DType::kF8E4M3) {
    for (int64_t r = r0; r < r1; ++r) {
      if (const int64_t c = FirstFp8NaN(base + r * k + c0, c1 - c0); c >= 0) {
        return BadElement(source, name, where(r, c0 + c), "an FP8 NaN code");
      }
    }
    // Staged FP8 rows start on a 128-row scale block (read_plan.h): the scales' first row is
    // row_origin / 128 of the checkpoint's [ceil(n/128), ceil(k/128)].
    return CheckFinite(source, std::string(prefix) + ".weight_scale_inv",
                       row_origin / kFp8ScaleBlock * ScaleBlocks(k));
  }
  if (!IsFloat(w->dtype)) return absl::OkStatus();
  const FloatBits f = BitsOf(w->dtype);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = base + (r * k + c0) * f.size;
    if (const int64_t c = FirstNonFinite(row, c1 - c0, f); c >= 0) {
      return BadElement(source, name, where(r, c0 + c), Describe(row, c, f));
    }
  }
  return absl::OkStatus();
}

}  // namespace dsv3
