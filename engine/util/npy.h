// NumPy .npy files (format version 1.0) of little-endian float32 in C order: enough for
// --logits-out and for reading reference logits in tests.
#pragma once

#include <cstdint>
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

}  // namespace dsv3
