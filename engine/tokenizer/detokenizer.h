// Streaming decode: text for each new id as soon as it ends on a whole UTF-8 character.
#pragma once

#include <cstdint>
#include <string>

#include "engine/tokenizer/tokenizer.h"

namespace dsv3 {

// The deltas of Push and Flush, concatenated, equal tokenizer.Decode(all ids pushed); every
// delta is well-formed UTF-8 (a token that ends inside a character is held back until the
// character completes). Not thread-safe; one per output stream. `tokenizer` must outlive it.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // The text that `id` completes, possibly empty.
  std::string Push(int32_t id);
  // Whatever is held back, with an unfinished character replaced by U+FFFD; call at the end.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // at most one unfinished character (< 4 bytes)
};

}  // namespace dsv3
