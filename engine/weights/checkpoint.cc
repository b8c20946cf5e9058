#include "engine/weights/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dsv3 {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kIndexFile[] = "model.safetensors.index.json";

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
    const int file_index = static_cast<int>(ckpt->files_.size());
    for (const SafetensorsEntry& e : (*file)->entries()) {
      auto [it, inserted] = ckpt->index_.try_emplace(e.name, Location{file_index, &e});
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat(model_dir, ": tensor '", e.name, "' is in both ",
                         ckpt->files_[it->second.file]->path(), " and ", path));
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
  return it == index_.end() ? "" : files_[it->second.file]->path();
}

absl::StatusOr<TensorView> Checkpoint::Get(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": tensor '", std::string(name), "' not found"));
  }
  return files_[it->second.file]->View(*it->second.entry);
}

const Checkpoint::Location* Checkpoint::Locate(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &it->second;
}

}  // namespace dsv3
