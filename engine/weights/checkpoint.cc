#include "engine/weights/checkpoint.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace dsv3 {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kIndexFile[] = "model.safetensors.index.json";

// All 256 E4M3 codes as float: dequantization is then one load and one multiply per weight.
const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = Fp8E4M3ToF32(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

// Element i of a F32/BF16/F16 buffer. memcpy because safetensors does not promise alignment.
float LoadFloat(const uint8_t* base, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, base + 4 * i, 4);
      return f;
    }
    case DType::kBF16:
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, base + 2 * i, 2);
      return dtype == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
    }
    default:
      return 0.0f;  // callers only pass float dtypes (checked by Get)
  }
}

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return text.str();
}

// The index's weight_map: tensor name -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ReadIndex(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  Json root;
  try {
    root = Json::parse(*text);
  } catch (const Json::parse_error& e) {
    // The position, not the parser's message: that quotes the file's text.
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": invalid JSON (error at byte ", e.byte, ")"));
  } catch (const Json::exception&) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON"));
  }
  auto it = root.is_object() ? root.find("weight_map") : root.end();
  if (it == root.end() || !it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing 'weight_map' object"));
  }
  std::map<std::string, std::string> map;
  for (const auto& [name, shard] : it->items()) {
    if (!shard.is_string() || shard.get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry for tensor '", name, "' is not a file name"));
    }
    const std::string& file = shard.get_ref<const std::string&>();
    // Shards are files of the model directory itself: a name with a directory part (an
    // absolute path, "../", "sub/") could make the server open any file it can read.
    if (file.find_first_of("/\\") != std::string::npos || file == "." || file == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": weight_map entry for tensor '", name, "' names '", file,
          "', which is not a file name in the model directory (no '/', '\\' or '..')"));
    }
    map[name] = file;
  }
  return map;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return absl::NotFoundError(absl::StrCat(model_dir, ": not a directory"));
  }
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = model_dir;

  const std::string index_path = (fs::path(model_dir) / kIndexFile).string();
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> shard_paths;
  if (fs::exists(index_path, ec)) {
    absl::StatusOr<std::map<std::string, std::string>> map = ReadIndex(index_path);
    if (!map.ok()) return map.status();
    weight_map = *std::move(map);
    if (weight_map.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map is empty"));
    }
    std::set<std::string> shards;
    for (const auto& [name, shard] : weight_map) shards.insert(shard);
    for (const std::string& shard : shards) {
      shard_paths.push_back((fs::path(model_dir) / shard).string());
    }
  } else {
    for (fs::directory_iterator it(model_dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() == ".safetensors" && it->is_regular_file(ec)) {
        shard_paths.push_back(it->path().string());
      }
    }
    if (ec) return absl::InternalError(absl::StrCat(model_dir, ": ", ec.message()));
    std::sort(shard_paths.begin(), shard_paths.end());
  }
  if (shard_paths.empty()) {
    return absl::NotFoundError(
        absl::StrCat(model_dir, ": no .safetensors files (and no ", kIndexFile, ")"));
  }

  std::map<std::string, const SafetensorsFile*> by_path;
  for (const std::string& path : shard_paths) {
    if (!weight_map.empty() && !fs::is_regular_file(path, ec)) {
      return absl::NotFoundError(
          absl::StrCat(path, ": shard named by ", kIndexFile, " does not exist"));
    }
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    if (!file.ok()) return file.status();
    by_path[path] = file->get();
    for (const SafetensorsEntry& e : (*file)->entries()) {
      auto [it, inserted] = ckpt->index_.try_emplace(e.name, file->get(), &e);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(model_dir, ": tensor '", e.name,
                                                       "' is in both ", it->second.first->path(),
                                                       " and ", path));
      }
    }
    ckpt->files_.push_back(*std::move(file));
  }
  // The index must agree with the shards: a tensor it places must be there.
  for (const auto& [name, shard] : weight_map) {
    const std::string path = (fs::path(model_dir) / shard).string();
    if (by_path.at(path)->Find(name) == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(path, ": tensor '", name, "' (placed here by ", kIndexFile, ") not found"));
    }
  }
  return ckpt;
}

bool Checkpoint::Has(std::string_view name) const { return index_.find(name) != index_.end(); }

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, where] : index_) names.push_back(name);
  return names;
}

std::string Checkpoint::FileOf(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? "" : it->second.first->path();
}

absl::StatusOr<TensorView> Checkpoint::Get(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": tensor '", std::string(name), "' not found"));
  }
  return it->second.first->View(*it->second.second);
}

absl::StatusOr<TensorView> Checkpoint::Get(std::string_view name, std::span<const int64_t> shape,
                                           std::initializer_list<DType> allowed) const {
  absl::StatusOr<TensorView> view = Get(name);
  if (!view.ok()) return view.status();
  const SafetensorsEntry& e = *index_.find(name)->second.second;
  const std::string file = FileOf(name);
  const std::string name_str(name);
  if (!std::equal(e.shape.begin(), e.shape.end(), shape.begin(), shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", name_str, "': shape ",
                                                   ShapeString(e.shape), ", expected ",
                                                   ShapeString(shape)));
  }
  if (std::find(allowed.begin(), allowed.end(), e.dtype) == allowed.end()) {
    std::vector<std::string> names;
    for (DType t : allowed) names.emplace_back(DTypeName(t));
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor '", name_str, "': dtype ", std::string(DTypeName(e.dtype)),
                     ", expected one of ", absl::StrJoin(names, ", ")));
  }
  return view;
}

absl::StatusOr<std::vector<float>> Checkpoint::LoadF32(std::string_view name,
                                                       std::span<const int64_t> shape) const {
  absl::StatusOr<TensorView> view = Get(name, shape, {DType::kF32, DType::kBF16, DType::kF16});
  if (!view.ok()) return view.status();
  const int64_t n = view->numel();
  std::vector<float> out(static_cast<size_t>(n));
  const auto* base = static_cast<const uint8_t*>(view->data);
  if (view->dtype == DType::kF32) {
    std::memcpy(out.data(), base, static_cast<size_t>(n) * 4);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = LoadFloat(base, view->dtype, i);
  }
  return out;
}

absl::StatusOr<std::vector<float>> Checkpoint::LoadLinearF32(std::string_view prefix, int64_t n,
                                                             int64_t k, const Slice2D& slice,
                                                             int64_t block_n,
                                                             int64_t block_k) const {
  const std::string name = std::string(prefix) + ".weight";
  const std::array<int64_t, 2> shape = {n, k};
  absl::StatusOr<TensorView> w =
      Get(name, shape, {DType::kF8E4M3, DType::kBF16, DType::kF16, DType::kF32});
  if (!w.ok()) return w.status();
  const int64_t r0 = slice.row_begin, r1 = slice.row_end < 0 ? n : slice.row_end;
  const int64_t c0 = slice.col_begin, c1 = slice.col_end < 0 ? k : slice.col_end;
  if (r0 < 0 || r0 > r1 || r1 > n || c0 < 0 || c0 > c1 || c1 > k || block_n <= 0 || block_k <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        FileOf(name), ": tensor '", name, "': bad slice of [", n, ", ", k, "]: rows [", r0, ", ",
        r1, "), cols [", c0, ", ", c1, "), block [", block_n, ", ", block_k, "]"));
  }
  const auto* base = static_cast<const uint8_t*>(w->data);
  std::vector<float> out(static_cast<size_t>((r1 - r0) * (c1 - c0)));

  if (w->dtype != DType::kF8E4M3) {
    float* o = out.data();
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = c0; c < c1; ++c) *o++ = LoadFloat(base, w->dtype, r * k + c);
    }
    return out;
  }

  // scale_inv: [ceil(n/block_n), ceil(k/block_k)], F32 as DeepSeek ships it (BF16 accepted).
  const std::string scale_name = std::string(prefix) + ".weight_scale_inv";
  if (!Has(scale_name)) {
    return absl::NotFoundError(absl::StrCat(FileOf(name), ": tensor '", name,
                                            "': F8_E4M3 weight without '", scale_name, "'"));
  }
  const std::array<int64_t, 2> scale_shape = {(n + block_n - 1) / block_n,
                                              (k + block_k - 1) / block_k};
  absl::StatusOr<std::vector<float>> scale = LoadF32(scale_name, scale_shape);
  if (!scale.ok()) return scale.status();
  DequantizeFp8Blocks(base, n, k, scale->data(), block_n, block_k, r0, r1, c0, c1, out.data());
  return out;
}

void DequantizeFp8Blocks(const uint8_t* fp8, int64_t n, int64_t k, const float* scale_inv,
                         int64_t bn, int64_t bk, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                         float* out) {
  const std::array<float, 256>& table = Fp8Table();
  const int64_t scale_cols = (k + bk - 1) / bk;
  const int64_t width = c1 - c0;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* src = fp8 + r * k;
    const float* srow = scale_inv + (r / bn) * scale_cols;
    float* dst = out + (r - r0) * width;
    // Walk the row one column block at a time so the scale is loaded once per block.
    for (int64_t c = c0; c < c1;) {
      const int64_t block_end = std::min(c1, (c / bk + 1) * bk);
      const float s = srow[c / bk];
      for (; c < block_end; ++c) dst[c - c0] = table[src[c]] * s;
    }
  }
}

}  // namespace dsv3
