#include "engine/tokenizer/detokenizer.h"

#include "engine/tokenizer/byte_level.h"

namespace dsv3 {

std::string IncrementalDetokenizer::Push(int32_t id) {
  if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) return {};
  pending_.append(tokenizer_.TokenBytes(id));
  // Cutting just before an unfinished character keeps the U+FFFD substitution of ill-formed
  // bytes the same as in a one-shot Decode: such a character starts with a lead byte, which no
  // earlier ill-formed sequence can extend over.
  const size_t complete = tokenizer::CompleteUtf8Prefix(pending_);
  std::string text;
  tokenizer::AppendUtf8Lossy(std::string_view(pending_).substr(0, complete), text);
  pending_.erase(0, complete);
  return text;
}

std::string IncrementalDetokenizer::Flush() {
  std::string text;
  tokenizer::AppendUtf8Lossy(pending_, text);
  pending_.clear();
  return text;
}

}  // namespace dsv3
