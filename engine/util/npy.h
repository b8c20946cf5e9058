// NumPy .npy files (format version 1.0) of little-endian float32 in C order: enough for
// --logits-out, for reading reference logits in tests, and for dsv3-eval's logits files, which
// are streamed (NpyF32Writer / NpyF32Reader) because [tokens, vocab] may not fit in memory.
#pragma once

#include <cstdint>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3 {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

absl::Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape,
                         const float* data);
absl::StatusOr<NpyArray> ReadNpyF32(const std::string& path);

// Writes a float32 .npy whose shape is known up front: the header at Create, then the values in
// C order over any number of Append calls. Close checks that exactly the shape's element count
// was written; a file not closed is incomplete.
class NpyF32Writer {
 public:
  static absl::StatusOr<NpyF32Writer> Create(const std::string& path,
                                             const std::vector<int64_t>& shape);
  // FailedPrecondition when `values` would run past the shape's element count.
  absl::Status Append(std::span<const float> values);
  absl::Status Close();

 private:
  NpyF32Writer(std::string path, int64_t remaining)
      : path_(std::move(path)), remaining_(remaining) {}
  std::string path_;
  std::ofstream out_;
  int64_t remaining_;  // values still to write
};

// Reads a float32 .npy a few values at a time. Open checks the header and that the file size
// matches the shape; Read gives the next values in C order.
class NpyF32Reader {
 public:
  static absl::StatusOr<NpyF32Reader> Open(const std::string& path);
  const std::vector<int64_t>& shape() const { return shape_; }
  // The next values.size() values; OutOfRange past the end of the data.
  absl::Status Read(std::span<float> values);

 private:
  explicit NpyF32Reader(std::string path) : path_(std::move(path)) {}
  std::string path_;
  std::ifstream in_;
  std::vector<int64_t> shape_;
  int64_t remaining_ = 0;  // values not read yet
};

}  // namespace dsv3
