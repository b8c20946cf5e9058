// Helpers for parsers that look for marker strings in text arriving in arbitrary pieces.
#pragma once

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <string_view>

namespace dsv3::tokenizer {

// The length of the longest suffix of `text` that is a proper prefix of one of `markers`: the
// bytes a streaming parser must hold back because the next delta may complete a marker.
inline size_t PartialMarkerSuffix(std::string_view text,
                                  std::initializer_list<std::string_view> markers) {
  size_t longest = 0;
  for (const std::string_view marker : markers) {
    const size_t max = std::min(text.size(), marker.size() - 1);
    for (size_t n = max; n > longest; --n) {
      if (text.substr(text.size() - n) == marker.substr(0, n)) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

}  // namespace dsv3::tokenizer
