// The pre-tokenizer of a Hugging Face tokenizer.json: cuts text into the pieces that BPE then
// encodes one by one. Supported: Split (regex pattern, behaviour Isolated or Removed), ByteLevel
// (its byte mapping happens in BPE; with use_regex it first splits with GPT-2's pattern), and a
// Sequence of these.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/regex.h"
#include "nlohmann/json.hpp"

namespace dsv3::tokenizer {

// A byte range [begin, end) of the text being split.
struct Piece {
  size_t begin = 0;
  size_t end = 0;
};

class PreTokenizer {
 public:
  // `config` is tokenizer.json's "pre_tokenizer" (null means the text is one piece).
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& config);

  // Replaces `pieces` with the pieces of text[begin, end), in order, none empty. `text` must be
  // valid UTF-8. `scratch` is working space the caller may reuse across calls.
  void Split(std::string_view text, Piece range, std::vector<Piece>& pieces,
             std::vector<Piece>& scratch) const;

 private:
  struct Stage {
    Regex regex;
    bool keep_matches;  // Isolated keeps matches as pieces; Removed drops them
  };

  absl::Status AddStage(const nlohmann::json& config);

  std::vector<Stage> stages_;
};

}  // namespace dsv3::tokenizer
