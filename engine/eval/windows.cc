#include "engine/eval/windows.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dsv3 {

absl::StatusOr<std::vector<EvalWindow>> PlanWindows(int64_t num_tokens, int32_t context) {
  if (context < 3) {
    return absl::InvalidArgumentError(absl::StrCat("context ", context, " is below 3"));
  }
  if (num_tokens < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(num_tokens, " token(s): a sequence needs at least 2 to score one"));
  }
  if (num_tokens <= context) {
    return std::vector<EvalWindow>{{0, static_cast<int32_t>(num_tokens), 0}};
  }
  std::vector<EvalWindow> windows;
  for (int64_t begin = 0; begin < num_tokens; begin += context) {
    const auto length = static_cast<int32_t>(std::min<int64_t>(context, num_tokens - begin));
    const EvalWindow window{begin, length, length / 2};
    if (window.num_scored() > 0) windows.push_back(window);
  }
  return windows;
}

}  // namespace dsv3
