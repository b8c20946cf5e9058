// StagedTensors: the tensors of one load request (a weight and its block scales, or one dense
// tensor) as the parallel reader staged them, seen through the TensorSource interface so that
// the value checks and the backends read them the same way as a Checkpoint. A staged tensor may
// be some rows of the stored one (read_plan.h says which); its shape is then those rows'.
// Holds views only: the memory is the reader's and is valid until the loader releases it.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/weights/tensor_source.h"

namespace dsv3 {

class StagedTensors final : public TensorSource {
 public:
  void Add(std::string name, std::string file, const TensorView& view) {
    tensors_[std::move(name)] = {std::move(file), view};
  }
  bool Has(std::string_view name) const override { return tensors_.find(name) != tensors_.end(); }
  std::string FileOf(std::string_view name) const override {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? "" : it->second.file;
  }
  absl::StatusOr<TensorView> Get(std::string_view name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return absl::NotFoundError(absl::StrCat("tensor '", std::string(name), "' not staged"));
    }
    return it->second.view;
  }
  using TensorSource::Get;

 private:
  struct Staged {
    std::string file;
    TensorView view;
  };
  std::map<std::string, Staged, std::less<>> tensors_;
};

}  // namespace dsv3
