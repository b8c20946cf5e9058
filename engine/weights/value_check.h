// Value checks on checkpoint tensors, run before a tensor is loaded. A NaN or infinite weight (or
// block scale, or an FP8 NaN code) makes every activation it touches NaN, which the sampler and
// the kernels turn into garbage or all-zero output while the server looks healthy; so the load
// fails instead, naming the file, the tensor and the first bad element.
//
// Every byte a rank loads is scanned, so the scan must keep up with the disk: elements are tested
// in branch-free blocks (which the compiler vectorizes) and a block is searched element by
// element only when it holds a bad one. The reader threads scan each chunk as it lands
// (AnyNonFinite); the exact checks below, which name the element and honour the slice, run on
// the loading thread only for tensors whose bytes the scan flagged.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "engine/weights/tensor_source.h"

namespace dsv3 {

// Whether any of the `n` elements of `dtype` at `p` is NaN or infinite: an all-ones exponent for
// F32, BF16 and F16, a NaN code (0x7F, 0xFF) for FP8 E4M3. Other dtypes: false. `p` needs no
// alignment.
bool AnyNonFinite(const uint8_t* p, int64_t n, DType dtype);

// Every element of the float tensor `name` (F32, BF16, F16) is finite. Tensors of other dtypes
// and absent tensors pass (the loader reports those). InvalidArgument:
// "<file>: tensor '<name>': element <i> is NaN".
absl::Status CheckFiniteTensor(const TensorSource& source, std::string_view name);

// The linear weight "<prefix>.weight" as LoadLinearF32 reads it, restricted to `slice` (the rows
// and columns this rank keeps, so tensor-parallel ranks scan only their share): float values
// finite, FP8 E4M3 codes not NaN (0x7F, 0xFF: e4m3fn has no infinities), and
// "<prefix>.weight_scale_inv" finite. Same error form as CheckFiniteTensor, with [row, col].
// `row_origin`: the source's row 0 is this row of the checkpoint's tensor (staged rows, see
// read_plan.h); the message gives the checkpoint's row.
absl::Status CheckLinearValues(const TensorSource& source, std::string_view prefix, int64_t n,
                               int64_t k, const Slice2D& slice, int64_t row_origin = 0);

}  // namespace dsv3
