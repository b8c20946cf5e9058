#include "engine/tokenizer/added_tokens.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dsv3::tokenizer {
namespace {

// Length of the UTF-8 character that ends at text[end) / starts at text[begin].
size_t LastCharLength(std::string_view text, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<uint8_t>(text[begin]) & 0xC0) == 0x80) --begin;
  return end - begin;
}
size_t FirstCharLength(std::string_view text, size_t begin) {
  size_t end = begin + 1;
  while (end < text.size() && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) ++end;
  return end - begin;
}

// Unicode White_Space (what Rust's char::is_whitespace and regex \s test) for the character
// that starts at text[pos], or 0 bytes when it is not whitespace.
size_t WhitespaceLength(std::string_view text, size_t pos) {
  const uint8_t b = text[pos];
  if ((b >= 0x09 && b <= 0x0D) || b == 0x20) return 1;
  if (b < 0x80) return 0;
  const size_t n = FirstCharLength(text, pos);
  std::string_view ch = text.substr(pos, n);
  static constexpr std::string_view kMultiByte[] = {
      "\u0085", "\u00A0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003",
      "\u2004", "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200A",
      "\u2028", "\u2029", "\u202F", "\u205F", "\u3000"};
  return std::find(std::begin(kMultiByte), std::end(kMultiByte), ch) != std::end(kMultiByte) ? n
                                                                                             : 0;
}

}  // namespace

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const nlohmann::json& config) {
  std::vector<AddedToken> tokens;
  if (config.is_null()) return tokens;
  if (!config.is_array()) return absl::InvalidArgumentError("added_tokens: expected an array");
  for (const auto& t : config) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        !t.contains("content") || !t["content"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("added_tokens: bad entry ", t.dump()));
    }
    AddedToken token;
    token.id = t["id"].get<int32_t>();
    token.content = t["content"].get<std::string>();
    token.single_word = t.value("single_word", false);
    token.lstrip = t.value("lstrip", false);
    token.rstrip = t.value("rstrip", false);
    token.normalized = t.value("normalized", !t.value("special", false));
    token.special = t.value("special", false);
    if (token.id < 0 || token.content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("added_tokens: bad entry ", t.dump()));
    }
    tokens.push_back(std::move(token));
  }
  return tokens;
}

absl::StatusOr<AddedTokenMatcher> AddedTokenMatcher::Create(std::vector<AddedToken> tokens) {
  absl::StatusOr<Regex> word_char =
      Regex::Compile(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])");
  if (!word_char.ok()) return word_char.status();
  return AddedTokenMatcher(std::move(tokens), *std::move(word_char));
}

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens, Regex word_char)
    : tokens_(std::move(tokens)), nodes_(1), word_char_(std::move(word_char)) {
  for (size_t t = 0; t < tokens_.size(); ++t) {
    int32_t node = 0;
    for (const char c : tokens_[t].content) {
      const auto byte = static_cast<uint8_t>(c);
      auto& children = nodes_[node].children;
      auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                                 [](const auto& a, const auto& b) { return a.first < b.first; });
      if (it != children.end() && it->first == byte) {
        node = it->second;
        continue;
      }
      const auto child = static_cast<int32_t>(nodes_.size());
      children.insert(it, {byte, child});
      nodes_.emplace_back();
      node = child;
    }
    // A content listed twice keeps its first entry.
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);
    first_byte_[static_cast<uint8_t>(tokens_[t].content[0])] = true;
  }
}

int32_t AddedTokenMatcher::LongestAt(std::string_view text, size_t pos) const {
  int32_t node = 0;
  int32_t found = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                               [](const auto& a, const auto& b) { return a.first < b.first; });
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    if (nodes_[node].token >= 0) found = nodes_[node].token;
  }
  return found;
}

void AddedTokenMatcher::Split(std::string_view text, size_t begin, size_t end,
                              std::vector<Segment>& out) const {
  const std::string_view sentence = text.substr(begin, end - begin);
  size_t emitted = 0;  // sentence offset up to which segments were appended
  size_t pos = 0;
  Match unused;
  const auto is_word_char = [&](size_t at, size_t len) {
    return word_char_.Find(sentence.substr(at, len), 0, &unused);
  };
  while (pos < sentence.size()) {
    if (!first_byte_[static_cast<uint8_t>(sentence[pos])]) {
      ++pos;
      continue;
    }
    const int32_t t = LongestAt(sentence, pos);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[t];
    size_t start = pos;
    size_t stop = pos + token.content.size();
    // Matches never overlap: the search resumes after this one whether or not it is used.
    pos = stop;
    if (token.single_word) {
      const bool word_before = start > 0 && is_word_char(start - LastCharLength(sentence, start),
                                                         LastCharLength(sentence, start));
      const bool word_after =
          stop < sentence.size() && is_word_char(stop, FirstCharLength(sentence, stop));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > emitted) {
        const size_t n = LastCharLength(sentence, s);
        if (WhitespaceLength(sentence, s - n) != n) break;
        s -= n;
      }
      start = s;
    }
    if (token.rstrip) {
      while (stop < sentence.size()) {
        const size_t n = WhitespaceLength(sentence, stop);
        if (n == 0) break;
        stop += n;
      }
    }
    if (start > emitted) out.push_back({begin + emitted, begin + start, -1});
    out.push_back({begin + start, begin + stop, token.id});
    emitted = stop;
    pos = std::max(pos, stop);
  }
  if (emitted < sentence.size()) out.push_back({begin + emitted, end, -1});
}

}  // namespace dsv3::tokenizer
