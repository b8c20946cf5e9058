// The tokenizer of a DeepSeek-V3-family model, read from its Hugging Face tokenizer.json (and
// tokenizer_config.json for the BOS/EOS tokens). Encode and Decode give the ids and text that
// Hugging Face's `tokenizers` gives for the same file; docs/tokenizer.md lists what is supported.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/pretokenizer.h"

namespace dsv3 {

// A stretch of text to encode. A literal piece is plain text: added and special tokens written
// in it are not recognized (their bytes are encoded as any other text), so text from an untrusted
// source cannot become a control token.
struct TextPiece {
  std::string_view text;
  bool literal = false;
};

class Tokenizer {
 public:
  // `path_or_dir` is a tokenizer.json file, or a directory holding one. tokenizer_config.json
  // beside it is read when present (bos_token, eos_token). Fails on a missing or malformed file
  // and on components this implementation does not support.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path_or_dir);

  // The ids of `text`, without BOS; added and special tokens written in the text are recognized.
  // Ill-formed UTF-8 is first replaced (U+FFFD per maximal ill-formed subsequence), as a Python
  // caller would have had to. Thread-safe.
  std::vector<int32_t> Encode(std::string_view text) const;
  // The ids of the pieces joined, with added tokens recognized only outside literal pieces.
  // Where no literal piece holds added-token text, the ids are Encode(joined text): text on
  // both sides of a piece boundary is pre-tokenized together. Each piece's ill-formed UTF-8 is
  // replaced as in Encode. Thread-safe.
  std::vector<int32_t> Encode(std::span<const TextPiece> pieces) const;

  // The text of `ids` (Hugging Face's ByteLevel decoder: bytes joined, then ill-formed UTF-8
  // replaced). Unknown ids are skipped. Thread-safe.
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // One more than the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const { return static_cast<int32_t>(token_bytes_.size()); }
  // The id of a token as written in tokenizer.json (an added token's content, or a vocabulary
  // entry in byte-level characters such as "Ġthe").
  std::optional<int32_t> TokenId(std::string_view token) const;
  // The bytes that `id` decodes to (empty for an unknown id).
  std::string_view TokenBytes(int32_t id) const;
  bool IsSpecial(int32_t id) const;
  // -1 when tokenizer_config.json names no BOS token.
  int32_t bos_id() const { return bos_id_; }
  std::vector<int32_t> eos_ids() const { return eos_ids_; }

 private:
  Tokenizer(tokenizer::BpeModel model, tokenizer::PreTokenizer pre,
            tokenizer::AddedTokenMatcher raw_added, tokenizer::AddedTokenMatcher normalized_added);
  // `text` is valid UTF-8; added tokens are matched only outside the `literal` byte ranges
  // (sorted, disjoint).
  void EncodeValid(std::string_view text, std::span<const std::pair<size_t, size_t>> literal,
                   std::vector<int32_t>& ids) const;

  tokenizer::BpeModel model_;
  tokenizer::PreTokenizer pre_tokenizer_;
  tokenizer::AddedTokenMatcher raw_added_;         // normalized == false: matched first
  tokenizer::AddedTokenMatcher normalized_added_;  // normalized == true: matched in what is left
  absl::flat_hash_map<std::string, int32_t> added_ids_;
  std::vector<std::string> token_bytes_;  // by id: the bytes the token decodes to
  std::vector<bool> special_;             // by id
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
};

}  // namespace dsv3
