// libFuzzer target over model.safetensors.index.json: arbitrary bytes as the index of a model
// directory that holds one valid shard (tensor "a"). Checkpoint::Open must fail cleanly or open
// only files of the directory: an accepted index names the shard, and "a" loads from it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/weights/checkpoint.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// A directory with shard.safetensors holding "a": F32 [2] = {1, 2}, made once per process.
const std::string& ModelDir() {
  static const std::string dir = [] {
    char name[] = "/tmp/dsv3-index-fuzz-XXXXXX";
    Check(mkdtemp(name) != nullptr);
    const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string file(8, '\0');
    const uint64_t len = header.size();
    std::memcpy(file.data(), &len, 8);
    const float values[2] = {1.0f, 2.0f};
    file += header;
    file.append(reinterpret_cast<const char*>(values), sizeof(values));
    std::ofstream(std::string(name) + "/shard.safetensors", std::ios::binary) << file;
    return std::string(name);
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string index = ModelDir() + "/model.safetensors.index.json";
  std::ofstream(index, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  auto ckpt = dsv3::Checkpoint::Open(ModelDir());
  if (!ckpt.ok()) return 0;
  for (const std::string& name : (*ckpt)->Names()) {
    Check((*ckpt)->FileOf(name) == ModelDir() + "/shard.safetensors");
  }
  if ((*ckpt)->Has("a")) {
    const int64_t shape[] = {2};
    auto a = (*ckpt)->LoadF32("a", shape);
    Check(a.ok() && (*a)[0] == 1.0f && (*a)[1] == 2.0f);
  }
  return 0;
}
