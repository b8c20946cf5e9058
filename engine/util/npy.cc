#include "engine/util/npy.h"

#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dsv3 {
namespace {

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Magic, version, header length and the header dict, padded with spaces to a multiple of 64
// bytes and ended by a newline, as the format asks.
std::string Preamble(const std::vector<int64_t>& shape) {
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims += ",";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", dims, "), }");
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  const uint16_t len = static_cast<uint16_t>(header.size());
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>(len >> 8));
  return out + header;
}

}  // namespace

absl::Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape,
                         const float* data) {
  auto writer = NpyF32Writer::Create(path, shape);
  if (!writer.ok()) return writer.status();
  if (absl::Status s = writer->Append({data, static_cast<size_t>(NumElements(shape))}); !s.ok()) {
    return s;
  }
  return writer->Close();
}

absl::StatusOr<NpyArray> ReadNpyF32(const std::string& path) {
  auto reader = NpyF32Reader::Open(path);
  if (!reader.ok()) return reader.status();
  NpyArray arr;
  arr.shape = reader->shape();
  arr.data.resize(NumElements(arr.shape));
  if (absl::Status s = reader->Read(arr.data); !s.ok()) return s;
  return arr;
}

absl::StatusOr<NpyF32Writer> NpyF32Writer::Create(const std::string& path,
                                                  const std::vector<int64_t>& shape) {
  NpyF32Writer writer(path, NumElements(shape));
  writer.out_.open(path, std::ios::binary | std::ios::trunc);
  if (!writer.out_) return absl::UnavailableError(absl::StrCat(path, ": cannot open for writing"));
  const std::string preamble = Preamble(shape);
  writer.out_.write(preamble.data(), static_cast<std::streamsize>(preamble.size()));
  if (!writer.out_) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return writer;
}

absl::Status NpyF32Writer::Append(std::span<const float> values) {
  if (static_cast<int64_t>(values.size()) > remaining_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": ", values.size(), " more values than the shape holds"));
  }
  out_.write(reinterpret_cast<const char*>(values.data()),
             static_cast<std::streamsize>(values.size() * sizeof(float)));
  if (!out_) return absl::DataLossError(absl::StrCat(path_, ": write failed"));
  remaining_ -= static_cast<int64_t>(values.size());
  return absl::OkStatus();
}

absl::Status NpyF32Writer::Close() {
  out_.close();
  if (!out_) return absl::DataLossError(absl::StrCat(path_, ": write failed"));
  if (remaining_ != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": closed with ", remaining_, " values of the shape unwritten"));
  }
  return absl::OkStatus();
}

absl::StatusOr<NpyF32Reader> NpyF32Reader::Open(const std::string& path) {
  NpyF32Reader reader(path);
  reader.in_.open(path, std::ios::binary | std::ios::ate);
  if (!reader.in_) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  const int64_t file_size = reader.in_.tellg();
  reader.in_.seekg(0);
  char start[10];
  if (file_size < 10 || !reader.in_.read(start, 10) || std::string_view(start, 6) != "\x93NUMPY" ||
      start[6] != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a version 1 .npy file"));
  }
  const int64_t len = static_cast<uint8_t>(start[8]) | (static_cast<uint8_t>(start[9]) << 8);
  if (10 + len > file_size) return absl::DataLossError(absl::StrCat(path, ": truncated header"));
  std::string header(len, '\0');
  reader.in_.read(header.data(), len);
  if (header.find("'<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected C-order <f4 data"));
  }
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'shape': \\(([^)]*)\\)"))) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no shape in header"));
  }
  for (absl::string_view part : absl::StrSplit(m[1].str(), ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(part, &d) || d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad shape"));
    }
    reader.shape_.push_back(d);
  }
  reader.remaining_ = NumElements(reader.shape_);
  if (file_size - 10 - len != reader.remaining_ * static_cast<int64_t>(sizeof(float))) {
    return absl::DataLossError(absl::StrCat(path, ": data size does not match the shape"));
  }
  return reader;
}

absl::Status NpyF32Reader::Read(std::span<float> values) {
  if (static_cast<int64_t>(values.size()) > remaining_) {
    return absl::OutOfRangeError(
        absl::StrCat(path_, ": asked for ", values.size(), " values, ", remaining_, " left"));
  }
  in_.read(reinterpret_cast<char*>(values.data()),
           static_cast<std::streamsize>(values.size() * sizeof(float)));
  if (!in_) return absl::DataLossError(absl::StrCat(path_, ": read failed"));
  remaining_ -= static_cast<int64_t>(values.size());
  return absl::OkStatus();
}

}  // namespace dsv3
