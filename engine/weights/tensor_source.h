// TensorSource: where a backend reads checkpoint tensors from, by Hugging Face name. Two kinds:
// the memory-mapped Checkpoint (every tensor, whole) and StagedTensors (the few tensors the
// parallel loader has just read into staging memory, possibly only some rows of each). The
// conversions below (shape/dtype checks, float32 widening, FP8 dequantization) are written once
// against Get, so a backend loads the same way from either.
//
// Errors name the file that holds the tensor (FileOf) and the tensor.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/tensor.h"

namespace dsv3 {

// A sub-range of a 2-D weight [N, K]: rows [row_begin, row_end) and columns [col_begin, col_end).
// Tensor parallelism loads only its slice; end = -1 means "to the end".
struct Slice2D {
  int64_t row_begin = 0;
  int64_t row_end = -1;
  int64_t col_begin = 0;
  int64_t col_end = -1;
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  virtual bool Has(std::string_view name) const = 0;
  // The file that holds `name` (for error messages), or "" if absent.
  virtual std::string FileOf(std::string_view name) const = 0;
  // The raw tensor as stored, in host memory owned by the source (valid while it lives and, for
  // staged tensors, until the loader releases them). NotFound when absent.
  virtual absl::StatusOr<TensorView> Get(std::string_view name) const = 0;

  // As Get, and checks the shape (exact match) and that the dtype is one of `allowed`.
  absl::StatusOr<TensorView> Get(std::string_view name, std::span<const int64_t> shape,
                                 std::initializer_list<DType> allowed) const;

  // Any floating tensor (F32, BF16, F16) of exactly `shape`, converted to float32.
  absl::StatusOr<std::vector<float>> LoadF32(std::string_view name,
                                             std::span<const int64_t> shape) const;

  // A linear weight "<prefix>.weight" of logical shape [n, k] as float32, row-major [rows, cols]
  // of `slice`. Accepts F32/BF16/F16 weights, or F8_E4M3 with "<prefix>.weight_scale_inv" F32 of
  // shape [ceil(n/block_n), ceil(k/block_k)]: w[r][c] = fp8[r][c] * scale_inv[r/block_n][c/block_k]
  // (edge blocks are partial when n or k is not a multiple of the block).
  absl::StatusOr<std::vector<float>> LoadLinearF32(std::string_view prefix, int64_t n, int64_t k,
                                                   const Slice2D& slice = {}, int64_t block_n = 128,
                                                   int64_t block_k = 128) const;
};

// FP8 weights' scale blocks: DeepSeek's weight_block_size, 128 x 128.
inline constexpr int64_t kFp8ScaleBlock = 128;
// The scale blocks that cover `size` rows (or columns).
inline int64_t ScaleBlocks(int64_t size) { return (size + kFp8ScaleBlock - 1) / kFp8ScaleBlock; }

// Dequantizes rows [r0, r1) x cols [c0, c1) of a block-scaled FP8 matrix [n, k] into `out`
// (row-major [r1-r0, c1-c0]). `scale_inv` is [ceil(n/bn), ceil(k/bk)] row-major.
void DequantizeFp8Blocks(const uint8_t* fp8, int64_t n, int64_t k, const float* scale_inv,
                         int64_t bn, int64_t bk, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                         float* out);

std::string ShapeString(std::span<const int64_t> shape);

}  // namespace dsv3
