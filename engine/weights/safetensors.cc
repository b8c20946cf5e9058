#include "engine/weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dsv3 {

namespace {

using Json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; V3's largest shard header is
// well under 1 MB, so anything bigger is corruption, not a real checkpoint.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

absl::Status FileError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status EntryError(const std::string& path, const std::string& name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", what));
}

// A JSON number that is a non-negative integer fitting in uint64.
bool AsU64(const Json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

// Validates one header entry against a data section of `data_size` bytes.
absl::Status ParseEntry(const std::string& path, const std::string& name, const Json& v,
                        uint64_t data_size, SafetensorsEntry* e) {
  e->name = name;
  if (!v.is_object()) return EntryError(path, name, "entry is not a JSON object");
  auto dtype_it = v.find("dtype");
  if (dtype_it == v.end() || !dtype_it->is_string()) {
    return EntryError(path, name, "missing or non-string 'dtype'");
  }
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<DType> dtype = DTypeFromSafetensorsName(dtype_name);
  if (!dtype) return EntryError(path, name, absl::StrCat("unsupported dtype '", dtype_name, "'"));
  e->dtype = *dtype;

  auto shape_it = v.find("shape");
  if (shape_it == v.end() || !shape_it->is_array()) {
    return EntryError(path, name, "missing or non-array 'shape'");
  }
  if (shape_it->size() > static_cast<size_t>(kMaxDims)) {
    return EntryError(path, name,
                      absl::StrCat("shape has ", shape_it->size(), " dims; at most ", kMaxDims,
                                   " are supported"));
  }
  // Products are checked so that numel, byte counts and strides all fit in int64, even for the
  // non-zero dims of an empty tensor (View computes strides from them).
  uint64_t numel = 1;
  bool empty = false;
  for (const Json& d : *shape_it) {
    uint64_t dim = 0;
    if (!AsU64(d, &dim)) {
      return EntryError(path, name, absl::StrCat("shape has invalid dim ", d.dump()));
    }
    if (dim == 0) {
      empty = true;
    } else if (__builtin_mul_overflow(numel, dim, &numel) ||
               numel > static_cast<uint64_t>(INT64_MAX)) {
      return EntryError(path, name, absl::StrCat("shape ", shape_it->dump(), " overflows"));
    }
    e->shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t bytes = 0;
  if (!empty && __builtin_mul_overflow(numel, static_cast<uint64_t>(DTypeSize(e->dtype)), &bytes)) {
    return EntryError(path, name, absl::StrCat("shape ", shape_it->dump(), " overflows"));
  }

  auto off_it = v.find("data_offsets");
  uint64_t begin = 0, end = 0;
  if (off_it == v.end() || !off_it->is_array() || off_it->size() != 2 ||
      !AsU64((*off_it)[0], &begin) || !AsU64((*off_it)[1], &end)) {
    return EntryError(path, name, "'data_offsets' must be two non-negative integers");
  }
  if (begin > end || end > data_size) {
    return EntryError(path, name,
                      absl::StrCat("data_offsets [", begin, ", ", end,
                                   "] outside the data section of ", data_size, " bytes"));
  }
  if (end - begin != bytes) {
    return EntryError(
        path, name,
        absl::StrCat("data_offsets [", begin, ", ", end, "] span ", end - begin, " bytes; ",
                     dtype_name, " shape ", shape_it->dump(), " needs ", bytes));
  }
  e->begin = begin;
  e->end = end;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileError(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return FileError(path, absl::StrCat("file is ", file_size,
                                        " bytes, too short for the 8-byte header length"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) return FileError(path, absl::StrCat("mmap failed: ", strerror(errno)));

  // From here the destructor unmaps on every error path.
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;
  f->map_size_ = file_size;
  const uint8_t* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  // The errors below never quote the file: it may not be a safetensors file at all, and its
  // first bytes (read as the length) or its text could be anything, secrets included.
  if (header_len > file_size - 8) {
    return FileError(path, absl::StrCat("header length (the first 8 bytes) exceeds the ",
                                        file_size - 8,
                                        " bytes after it: not a complete safetensors file"));
  }
  if (header_len > kMaxHeaderBytes) {
    return FileError(path, absl::StrCat("header length (the first 8 bytes) exceeds the limit of ",
                                        kMaxHeaderBytes, " bytes"));
  }
  const uint64_t data_size = file_size - 8 - header_len;
  f->data_ = bytes + 8 + header_len;

  Json header;
  try {
    header = Json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const Json::parse_error& e) {
    return FileError(path, absl::StrCat("header is not valid JSON (error at byte ", 8 + e.byte,
                                        " of the file)"));
  } catch (const Json::exception&) {
    return FileError(path, "header is not valid JSON");
  }
  if (!header.is_object()) return FileError(path, "header is not a JSON object");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return FileError(path, "__metadata__ is not a JSON object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          return FileError(path, absl::StrCat("__metadata__ value '", mk, "' is not a string"));
        }
        f->metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    SafetensorsEntry e;
    absl::Status s = ParseEntry(path, key, value, data_size, &e);
    if (!s.ok()) return s;
    f->entries_.push_back(std::move(e));
  }

  // Overlaps: sort non-empty ranges by start and compare neighbours.
  std::vector<const SafetensorsEntry*> ranges;
  for (const SafetensorsEntry& e : f->entries_) {
    if (e.end > e.begin) ranges.push_back(&e);
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const auto* a, const auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i]->begin < ranges[i - 1]->end) {
      return EntryError(path, ranges[i]->name,
                        absl::StrCat("data_offsets [", ranges[i]->begin, ", ", ranges[i]->end,
                                     "] overlap tensor '", ranges[i - 1]->name, "' [",
                                     ranges[i - 1]->begin, ", ", ranges[i - 1]->end, "]"));
    }
  }
  for (size_t i = 0; i < f->entries_.size(); ++i) f->by_name_.emplace(f->entries_[i].name, i);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const SafetensorsEntry* SafetensorsFile::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

TensorView SafetensorsFile::View(const SafetensorsEntry& entry) const {
  // The mapping is PROT_READ; the const_cast only fits TensorView's untyped pointer.
  return TensorView::Contiguous(const_cast<uint8_t*>(data_ + entry.begin), entry.dtype,
                                entry.shape);
}

}  // namespace dsv3
