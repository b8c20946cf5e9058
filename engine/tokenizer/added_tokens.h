// Added tokens (tokenizer.json "added_tokens"): strings that are cut out of the text whole,
// before pre-tokenization, and map straight to their ids. Matching follows Hugging Face's
// AddedVocabulary: leftmost-longest among the tokens, then the single_word, lstrip and rstrip
// flags of the token found.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/regex.h"
#include "nlohmann/json.hpp"

namespace dsv3::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// Parses tokenizer.json's "added_tokens" array.
absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const nlohmann::json& config);

// A stretch of text: an added token (id >= 0) or text for the pre-tokenizer (id == -1).
struct Segment {
  size_t begin = 0;
  size_t end = 0;
  int32_t id = -1;
};

// Finds one group of added tokens in text (Hugging Face matches the tokens with
// normalized == false on the raw text first, then those with normalized == true on what is left;
// each group is one matcher).
class AddedTokenMatcher {
 public:
  static absl::StatusOr<AddedTokenMatcher> Create(std::vector<AddedToken> tokens);

  // Appends the segments of text[begin, end) to `out`, covering it in order, none empty. `text`
  // must be valid UTF-8.
  void Split(std::string_view text, size_t begin, size_t end, std::vector<Segment>& out) const;

  bool empty() const { return tokens_.empty(); }

 private:
  // A byte trie over the token contents; children are sorted by byte.
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t token = -1;  // index into tokens_ of the token ending here
  };

  AddedTokenMatcher(std::vector<AddedToken> tokens, Regex word_char);
  // The longest token that starts at text[pos], as an index into tokens_, or -1.
  int32_t LongestAt(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
  Regex word_char_;  // a word character as Rust's regex \w means it, for single_word
};

}  // namespace dsv3::tokenizer
