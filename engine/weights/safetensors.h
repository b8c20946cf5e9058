// SafetensorsFile: one memory-mapped .safetensors file. The header (8-byte little-endian length,
// then JSON) is parsed and every entry's dtype, shape and byte range are validated against the
// file size before anything is exposed, so a view handed out never reaches past the mapping.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/tensor.h"

namespace dsv3 {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates the header: JSON well-formed, known dtypes, shapes of
  // non-negative dims (at most kMaxDims), end - begin == numel * dtype size with no overflow,
  // ranges inside the file, no overlaps, __metadata__ values strings. Errors read
  // "<path>: <what>" or "<path>: tensor '<name>': <what>".
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsEntry* Find(std::string_view name) const;  // nullptr when absent
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The file offset of the data section (8 + header length): an entry's bytes are
  // [data_offset() + begin, data_offset() + end) of the file.
  uint64_t data_offset() const {
    return static_cast<uint64_t>(data_ - static_cast<const uint8_t*>(map_));
  }
  // A host view of the entry's bytes inside the mapping (read-only memory: never write to it).
  // The format does not align tensors: data may be misaligned for its dtype (copy with memcpy).
  TensorView View(const SafetensorsEntry& entry) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t, std::less<>> by_name_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dsv3
