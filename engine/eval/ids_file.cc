#include "engine/eval/ids_file.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace dsv3 {

absl::StatusOr<std::vector<int32_t>> ParseIdsLine(absl::string_view line, int64_t vocab) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(line, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int64_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("'", part, "' is not a token id"));
    }
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadIdsFile(const std::string& path,
                                                              int64_t vocab) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--ids-file ", path, ": cannot open"));
  std::vector<std::vector<int32_t>> sequences;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto ids = ParseIdsLine(line, vocab);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ids-file ", path, " line ", line_number, ": ", ids.status().message()));
    }
    if (ids->size() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ids-file ", path, " line ", line_number, ": ", ids->size(),
                       " token id; a sequence needs at least 2 to score one"));
    }
    sequences.push_back(*std::move(ids));
  }
  if (sequences.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--ids-file ", path, ": no sequence in it"));
  }
  return sequences;
}

}  // namespace dsv3
