#include "engine/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"

namespace dsv3 {
namespace {

using tokenizer::AddedToken;
using tokenizer::AddedTokenMatcher;
using tokenizer::BpeModel;
using tokenizer::PreTokenizer;

absl::StatusOr<nlohmann::json> ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::stringstream buffer;
  buffer << in.rdbuf();
  nlohmann::json json = nlohmann::json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not valid JSON"));
  }
  return json;
}

// tokenizer_config.json writes a special token either as a string or as an AddedToken object.
std::optional<std::string> ConfigToken(const nlohmann::json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

absl::Status CheckSupported(const nlohmann::json& json) {
  if (const auto n = json.find("normalizer"); n != json.end() && !n->is_null()) {
    // Only the identity is supported: an empty Sequence.
    if (n->value("type", "") != "Sequence" || !n->contains("normalizers") ||
        !(*n)["normalizers"].empty()) {
      return absl::UnimplementedError(absl::StrCat("normalizer ", n->dump()));
    }
  }
  if (const auto d = json.find("decoder");
      d == json.end() || d->is_null() || d->value("type", "") != "ByteLevel") {
    return absl::UnimplementedError("decoder: only ByteLevel is supported");
  }
  return absl::OkStatus();
}

}  // namespace

Tokenizer::Tokenizer(BpeModel model, PreTokenizer pre, AddedTokenMatcher raw_added,
                     AddedTokenMatcher normalized_added)
    : model_(std::move(model)),
      pre_tokenizer_(std::move(pre)),
      raw_added_(std::move(raw_added)),
      normalized_added_(std::move(normalized_added)) {}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path_or_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path file = path_or_dir;
  if (fs::is_directory(file, ec)) file /= "tokenizer.json";
  absl::StatusOr<nlohmann::json> json = ReadJson(file);
  if (!json.ok()) return json.status();
  if (absl::Status s = CheckSupported(*json); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(file.string(), ": ", s.message()));
  }
  absl::StatusOr<BpeModel> model = BpeModel::FromJson(json->value("model", nlohmann::json()));
  if (!model.ok()) return model.status();
  absl::StatusOr<PreTokenizer> pre =
      PreTokenizer::FromJson(json->value("pre_tokenizer", nlohmann::json()));
  if (!pre.ok()) return pre.status();
  absl::StatusOr<std::vector<AddedToken>> added =
      tokenizer::ParseAddedTokens(json->value("added_tokens", nlohmann::json()));
  if (!added.ok()) return added.status();

  std::vector<AddedToken> raw, normalized;
  for (const AddedToken& t : *added) (t.normalized ? normalized : raw).push_back(t);
  absl::StatusOr<AddedTokenMatcher> raw_matcher = AddedTokenMatcher::Create(std::move(raw));
  if (!raw_matcher.ok()) return raw_matcher.status();
  absl::StatusOr<AddedTokenMatcher> normalized_matcher =
      AddedTokenMatcher::Create(std::move(normalized));
  if (!normalized_matcher.ok()) return normalized_matcher.status();

  std::unique_ptr<Tokenizer> tok(new Tokenizer(
      *std::move(model), *std::move(pre), *std::move(raw_matcher), *std::move(normalized_matcher)));
  int32_t size = 0;
  for (const auto& [token, id] : tok->model_.vocab()) size = std::max(size, id + 1);
  for (const AddedToken& t : *added) size = std::max(size, t.id + 1);
  tok->token_bytes_.resize(size);
  tok->special_.resize(size);
  for (const auto& [token, id] : tok->model_.vocab()) {
    tok->token_bytes_[id] = tokenizer::TokenToBytes(token);
  }
  // Added tokens go through the decoder too; their ids take precedence over the vocabulary's.
  for (const AddedToken& t : *added) {
    tok->token_bytes_[t.id] = tokenizer::TokenToBytes(t.content);
    tok->special_[t.id] = t.special;
    tok->added_ids_.emplace(t.content, t.id);
  }

  const fs::path config_path = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    absl::StatusOr<nlohmann::json> config = ReadJson(config_path);
    if (!config.ok()) return config.status();
    if (auto bos = ConfigToken(*config, "bos_token")) {
      const std::optional<int32_t> id = tok->TokenId(*bos);
      if (!id) return absl::InvalidArgumentError(absl::StrCat("unknown bos_token ", *bos));
      tok->bos_id_ = *id;
    }
    if (auto eos = ConfigToken(*config, "eos_token")) {
      const std::optional<int32_t> id = tok->TokenId(*eos);
      if (!id) return absl::InvalidArgumentError(absl::StrCat("unknown eos_token ", *eos));
      tok->eos_ids_.push_back(*id);
    }
  }
  return tok;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (tokenizer::IsValidUtf8(text)) {
    EncodeValid(text, {}, ids);
  } else {
    std::string repaired;
    tokenizer::AppendUtf8Lossy(text, repaired);
    EncodeValid(repaired, {}, ids);
  }
  return ids;
}

std::vector<int32_t> Tokenizer::Encode(std::span<const TextPiece> pieces) const {
  std::string text;
  std::vector<std::pair<size_t, size_t>> literal;
  for (const TextPiece& p : pieces) {
    const size_t begin = text.size();
    tokenizer::AppendUtf8Lossy(p.text, text);
    if (p.literal && text.size() > begin) literal.emplace_back(begin, text.size());
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  EncodeValid(text, literal, ids);
  return ids;
}

void Tokenizer::EncodeValid(std::string_view text,
                            std::span<const std::pair<size_t, size_t>> literal,
                            std::vector<int32_t>& ids) const {
  // Scratch reused by every call on this thread, so steady-state encoding does not allocate.
  thread_local std::vector<tokenizer::Segment> raw_segments, segments;
  thread_local std::vector<tokenizer::Piece> pieces, piece_scratch;
  segments.clear();
  // Added tokens in text[begin, end): the raw ones first, then the normalized ones in the rest.
  const auto split_added = [&](size_t begin, size_t end) {
    if (begin == end) return;
    raw_segments.clear();
    raw_added_.Split(text, begin, end, raw_segments);
    for (const tokenizer::Segment& s : raw_segments) {
      if (s.id >= 0) {
        segments.push_back(s);
      } else {
        normalized_added_.Split(text, s.begin, s.end, segments);
      }
    }
  };
  size_t pos = 0;
  for (const auto& [begin, end] : literal) {
    split_added(pos, begin);
    segments.push_back({begin, end, -1});
    pos = end;
  }
  split_added(pos, text.size());

  // Neighbouring text segments (a literal piece and the template text around it) are
  // pre-tokenized as one, as Encode of the joined text would.
  for (size_t i = 0; i < segments.size();) {
    if (segments[i].id >= 0) {
      ids.push_back(segments[i++].id);
      continue;
    }
    const size_t begin = segments[i].begin;
    size_t end = segments[i].end;
    for (++i; i < segments.size() && segments[i].id < 0; ++i) end = segments[i].end;
    pre_tokenizer_.Split(text, {begin, end}, pieces, piece_scratch);
    for (const tokenizer::Piece& p : pieces) {
      model_.Encode(text.substr(p.begin, p.end - p.begin), ids);
    }
  }
  // The scratch lives as long as the thread (a gRPC thread: the process); one huge input must
  // not pin its size for good.
  constexpr size_t kKeepPieces = size_t{1} << 16;
  if (pieces.capacity() > kKeepPieces || piece_scratch.capacity() > kKeepPieces) {
    std::vector<tokenizer::Piece>().swap(pieces);
    std::vector<tokenizer::Piece>().swap(piece_scratch);
  }
  if (segments.capacity() > kKeepPieces || raw_segments.capacity() > kKeepPieces) {
    std::vector<tokenizer::Segment>().swap(segments);
    std::vector<tokenizer::Segment>().swap(raw_segments);
  }
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && special_[id]) continue;
    bytes.append(token_bytes_[id]);
  }
  if (tokenizer::IsValidUtf8(bytes)) return bytes;
  std::string text;
  tokenizer::AppendUtf8Lossy(bytes, text);
  return text;
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token_view) const {
  // This Abseil's string_view is its own type, which its hash maps need for lookups.
  const absl::string_view token(token_view.data(), token_view.size());
  if (auto it = added_ids_.find(token); it != added_ids_.end()) return it->second;
  if (auto it = model_.vocab().find(token); it != model_.vocab().end()) return it->second;
  return std::nullopt;
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  return id >= 0 && id < vocab_size() ? std::string_view(token_bytes_[id]) : std::string_view();
}

bool Tokenizer::IsSpecial(int32_t id) const { return id >= 0 && id < vocab_size() && special_[id]; }

}  // namespace dsv3
