#include "engine/tokenizer/pretokenizer.h"

#include <cctype>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dsv3::tokenizer {
namespace {

// The pattern that ByteLevel's use_regex applies (GPT-2's), part of that pre-tokenizer's
// definition rather than of any one tokenizer file.
constexpr std::string_view kByteLevelPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Where the search continues after an empty match at `pos`: the next character.
size_t NextCharacter(std::string_view s, size_t pos) {
  ++pos;
  while (pos < s.size() && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) ++pos;
  return pos;
}

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& config) {
  PreTokenizer pre;
  if (!config.is_null()) {
    if (absl::Status s = pre.AddStage(config); !s.ok()) return s;
  }
  return pre;
}

absl::Status PreTokenizer::AddStage(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    return absl::InvalidArgumentError("pre_tokenizer: expected an object with a \"type\"");
  }
  const std::string type = config["type"];
  if (type == "Sequence") {
    if (!config.contains("pretokenizers") || !config["pretokenizers"].is_array()) {
      return absl::InvalidArgumentError("pre_tokenizer Sequence: missing \"pretokenizers\"");
    }
    for (const auto& child : config["pretokenizers"]) {
      if (absl::Status s = AddStage(child); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    if (config.value("add_prefix_space", false)) {
      return absl::UnimplementedError("pre_tokenizer ByteLevel: add_prefix_space is not supported");
    }
    if (!config.value("use_regex", true)) return absl::OkStatus();
    absl::StatusOr<Regex> regex = Regex::Compile(OnigurumaToPcre2(kByteLevelPattern));
    if (!regex.ok()) return regex.status();
    stages_.push_back({*std::move(regex), true});
    return absl::OkStatus();
  }
  if (type == "Split") {
    const auto pattern = config.find("pattern");
    if (pattern == config.end() || !pattern->is_object()) {
      return absl::InvalidArgumentError("pre_tokenizer Split: missing \"pattern\"");
    }
    std::string source;
    if (pattern->contains("Regex") && (*pattern)["Regex"].is_string()) {
      source = OnigurumaToPcre2((*pattern)["Regex"].get<std::string>());
    } else if (pattern->contains("String") && (*pattern)["String"].is_string()) {
      // A literal: every ASCII punctuation byte escaped, so PCRE2 matches it as written.
      for (const char c : (*pattern)["String"].get<std::string>()) {
        if (static_cast<unsigned char>(c) < 0x80 && !std::isalnum(static_cast<unsigned char>(c))) {
          source.push_back('\\');
        }
        source.push_back(c);
      }
    } else {
      return absl::InvalidArgumentError("pre_tokenizer Split: pattern needs Regex or String");
    }
    if (config.value("invert", false)) {
      return absl::UnimplementedError("pre_tokenizer Split: invert is not supported");
    }
    const std::string behavior = config.value("behavior", "");
    if (behavior != "Isolated" && behavior != "Removed") {
      return absl::UnimplementedError(
          absl::StrCat("pre_tokenizer Split: behavior \"", behavior, "\" is not supported"));
    }
    absl::StatusOr<Regex> regex = Regex::Compile(source);
    if (!regex.ok()) return regex.status();
    stages_.push_back({*std::move(regex), behavior == "Isolated"});
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat("pre_tokenizer type \"", type, "\""));
}

void PreTokenizer::Split(std::string_view text, Piece range, std::vector<Piece>& pieces,
                         std::vector<Piece>& scratch) const {
  pieces.clear();
  if (range.end > range.begin) pieces.push_back(range);
  for (const Stage& stage : stages_) {
    scratch.clear();
    for (const Piece piece : pieces) {
      // Each piece is matched as a string of its own, as Hugging Face does: anchors and
      // lookarounds see the piece's ends, not the surrounding text.
      const std::string_view subject = text.substr(piece.begin, piece.end - piece.begin);
      size_t gap_begin = 0;
      size_t offset = 0;
      Match m;
      while (offset < subject.size() && stage.regex.Find(subject, offset, &m)) {
        if (m.begin > gap_begin)
          scratch.push_back({piece.begin + gap_begin, piece.begin + m.begin});
        if (m.end == m.begin) {
          // An empty match still splits the gap, as Oniguruma's find_iter reports it.
          gap_begin = m.begin;
          offset = NextCharacter(subject, m.begin);
          continue;
        }
        if (stage.keep_matches) {
          scratch.push_back({piece.begin + m.begin, piece.begin + m.end});
        }
        gap_begin = offset = m.end;
      }
      if (gap_begin < subject.size()) {
        scratch.push_back({piece.begin + gap_begin, piece.end});
      }
    }
    std::swap(pieces, scratch);
  }
}

}  // namespace dsv3::tokenizer
