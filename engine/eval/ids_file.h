// dsv3-eval's --ids-file: one sequence per line, comma-separated token ids, used exactly as
// given (no BOS added).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dsv3 {

// The ids of one line ("12, 7,3"; spaces around ids are allowed). InvalidArgument naming the
// value when one is not an integer or is outside [0, vocab).
absl::StatusOr<std::vector<int32_t>> ParseIdsLine(absl::string_view line, int64_t vocab);

// Every non-blank line of `path` (a trailing '\r' is ignored). Errors name the file and the
// 1-based line: a bad id (as ParseIdsLine), or a line of fewer than 2 ids (nothing to score).
// NotFound when the file cannot be opened; InvalidArgument when it holds no sequence.
absl::StatusOr<std::vector<std::vector<int32_t>>> ReadIdsFile(const std::string& path,
                                                              int64_t vocab);

}  // namespace dsv3
