// Checkpoint: a Hugging Face model directory of safetensors files (single file or sharded through
// model.safetensors.index.json), memory-mapped, with lookup by tensor name; the conversions of
// TensorSource (float32, FP8 e4m3 blocks dequantized with <name>_scale_inv) read the mapping.
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
#include "engine/weights/tensor_source.h"

namespace dsv3 {

class Checkpoint : public TensorSource {
 public:
  // Opens `model_dir`. With model.safetensors.index.json every shard it names must be a file
  // name of the directory (no '/', '\\' or '..': nothing outside it is opened) that exists, and
  // every tensor must be in the shard the index says; without an index, every *.safetensors file
  // in the directory is opened. Duplicate tensor names across files are an error. Errors never
  // quote a file's contents.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  bool Has(std::string_view name) const override;
  std::vector<std::string> Names() const;  // sorted
  std::string FileOf(std::string_view name) const override;
  // The raw tensor as stored (host memory inside the mmap; valid while the Checkpoint lives).
  absl::StatusOr<TensorView> Get(std::string_view name) const override;
  using TensorSource::Get;

  // Where a tensor's bytes are, for loaders that read files themselves (read_plan.h): nullptr
  // when absent.
  struct Location {
    int file = 0;  // index into files()
    const SafetensorsEntry* entry = nullptr;
  };
  const Location* Locate(std::string_view name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  Checkpoint() = default;
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location, std::less<>> index_;
};

}  // namespace dsv3
