#include "engine/util/npy.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/numbers.h"

namespace dsv3 {

absl::Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape,
                         const float* data) {
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims += ",";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", dims, "), }");
  // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64
  // and ended by a newline, as the format asks.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) return absl::UnavailableError(absl::StrCat(path, ": cannot open for writing"));
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(float)));
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<NpyArray> ReadNpyF32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0 || bytes[6] != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a version 1 .npy file"));
  }
  const size_t len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
  if (10 + len > bytes.size()) return absl::DataLossError(absl::StrCat(path, ": truncated header"));
  const std::string header = bytes.substr(10, len);
  if (header.find("'<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected C-order <f4 data"));
  }
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'shape': \\(([^)]*)\\)"))) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no shape in header"));
  }
  NpyArray arr;
  int64_t n = 1;
  for (absl::string_view part : absl::StrSplit(m[1].str(), ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(part, &d) || d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad shape"));
    }
    arr.shape.push_back(d);
    n *= d;
  }
  if (bytes.size() - 10 - len != static_cast<size_t>(n) * sizeof(float)) {
    return absl::DataLossError(absl::StrCat(path, ": data size does not match the shape"));
  }
  arr.data.resize(n);
  std::memcpy(arr.data.data(), bytes.data() + 10 + len, n * sizeof(float));
  return arr;
}

}  // namespace dsv3
