// Checkpoint: a Hugging Face model directory of safetensors files (single file or sharded through
// model.safetensors.index.json), memory-mapped, with lookup by tensor name and conversion of
// linear weights to float32 (FP8 e4m3 blocks dequantized with <name>_scale_inv).
//
// Every failure is a Status whose message is one line naming the file and, where there is one,
// the tensor: truncated or corrupt files, a shard named by the index that is missing, a tensor
// that is absent, of an unexpected dtype or of an unexpected shape. Nothing here crashes on bad
// input.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/tensor.h"
#include "engine/weights/safetensors.h"

namespace dsv3 {

// A sub-range of a 2-D weight [N, K]: rows [row_begin, row_end) and columns [col_begin, col_end).
// Tensor parallelism loads only its slice; end = -1 means "to the end".
struct Slice2D {
  int64_t row_begin = 0;
  int64_t row_end = -1;
  int64_t col_begin = 0;
  int64_t col_end = -1;
};

class Checkpoint {
 public:
  // Opens `model_dir`. With model.safetensors.index.json every shard it names must be a file
  // name of the directory (no '/', '\\' or '..': nothing outside it is opened) that exists, and
  // every tensor must be in the shard the index says; without an index, every *.safetensors file
  // in the directory is opened. Duplicate tensor names across files are an error. Errors never
  // quote a file's contents.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  bool Has(std::string_view name) const;
  std::vector<std::string> Names() const;  // sorted
  // The file that holds `name` (for error messages), or "" if absent.
  std::string FileOf(std::string_view name) const;

  // The raw tensor as stored (host memory inside the mmap; valid while the Checkpoint lives).
  absl::StatusOr<TensorView> Get(std::string_view name) const;
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
                                                   const Slice2D& slice = {},
                                                   int64_t block_n = 128,
                                                   int64_t block_k = 128) const;

 private:
  Checkpoint() = default;
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const SafetensorsFile*, const SafetensorsEntry*>, std::less<>>
      index_;
};

// Dequantizes rows [r0, r1) x cols [c0, c1) of a block-scaled FP8 matrix [n, k] into `out`
// (row-major [r1-r0, c1-c0]). `scale_inv` is [ceil(n/bn), ceil(k/bk)] row-major.
void DequantizeFp8Blocks(const uint8_t* fp8, int64_t n, int64_t k, const float* scale_inv,
                         int64_t bn, int64_t bk, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                         float* out);

}  // namespace dsv3
