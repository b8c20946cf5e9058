// The embedded demo model (tools/demo-model, extracted by the build) and its held-out text,
// for the tests that measure quality on a trained model.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace dsv3::testing {

inline std::string DemoModelDir() { return DSV3_DEMO_MODEL_DIR; }

// The first `max_lines` windows of tools/demo-model/heldout_ids.txt (Brown test documents, one
// window of up to 512 ids per line, each document's first window starting with BOS), each cut
// to at most `max_tokens` ids.
inline std::vector<std::vector<int32_t>> HeldOutWindows(size_t max_lines, size_t max_tokens) {
  std::vector<std::vector<int32_t>> windows;
  std::ifstream in(DSV3_DEMO_HELDOUT_IDS);
  for (std::string line; windows.size() < max_lines && std::getline(in, line);) {
    std::vector<int32_t> ids;
    for (absl::string_view part : absl::StrSplit(line, ',', absl::SkipEmpty())) {
      int32_t id;
      if (ids.size() < max_tokens && absl::SimpleAtoi(part, &id)) ids.push_back(id);
    }
    windows.push_back(std::move(ids));
  }
  return windows;
}

}  // namespace dsv3::testing
