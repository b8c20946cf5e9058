#include "engine/tokenizer/bpe.h"

#include <algorithm>
#include <mutex>
#include <span>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"

namespace dsv3::tokenizer {

// Results of recent pieces. Natural text repeats its words, so most pieces are found here and
// skip merging. Sharded so that concurrent encoders rarely wait on one another; a shard that
// fills up is emptied, which bounds memory without bookkeeping on every hit.
class BpeCache {
 public:
  static constexpr size_t kMinPieceBytes = 4;
  static constexpr size_t kMaxPieceBytes = 128;

  bool Lookup(std::string_view piece, std::vector<int32_t>& ids) {
    Shard& shard = ShardFor(piece);
    std::lock_guard lock(shard.mu);
    auto it = shard.map.find(absl::string_view(piece.data(), piece.size()));
    if (it == shard.map.end()) return false;
    ids.insert(ids.end(), it->second.begin(), it->second.end());
    return true;
  }

  void Insert(std::string_view piece, std::span<const int32_t> ids) {
    Shard& shard = ShardFor(piece);
    std::lock_guard lock(shard.mu);
    if (shard.map.size() >= kEntriesPerShard) shard.map.clear();
    shard.map.try_emplace(std::string(piece), ids.begin(), ids.end());
  }

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kEntriesPerShard = 8192;

  struct Shard {
    // std::mutex rather than absl::Mutex: uncontended, it is the cheaper of the two here, and
    // a lookup is the hot path of encoding.
    std::mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map;  // guarded by mu
  };

  Shard& ShardFor(std::string_view piece) {
    return shards_[absl::HashOf(absl::string_view(piece.data(), piece.size())) % kShards];
  }

  std::array<Shard, kShards> shards_;
};

BpeModel::BpeModel() : cache_(std::make_unique<BpeCache>()) { byte_ids_.fill(-1); }
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

absl::StatusOr<BpeModel> BpeModel::FromJson(const nlohmann::json& config) {
  if (!config.is_object() || config.value("type", "BPE") != "BPE") {
    return absl::UnimplementedError("tokenizer model: only BPE is supported");
  }
  if (config.contains("dropout") && !config["dropout"].is_null()) {
    return absl::UnimplementedError("BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (config.contains(key) && !config[key].is_null() && config[key] != "") {
      return absl::UnimplementedError(absl::StrCat("BPE ", key, " is not supported"));
    }
  }
  if (!config.contains("vocab") || !config["vocab"].is_object() || !config.contains("merges") ||
      !config["merges"].is_array()) {
    return absl::InvalidArgumentError("BPE model needs \"vocab\" and \"merges\"");
  }
  BpeModel model;
  model.ignore_merges_ = config.value("ignore_merges", false);
  const auto& vocab = config["vocab"];
  model.vocab_.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("BPE vocab: bad id for \"", token, "\""));
    }
    model.vocab_.emplace(token, id.get<int32_t>());
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    AppendUtf8(ByteToCodePoint(static_cast<uint8_t>(b)), ch);
    if (auto it = model.vocab_.find(ch); it != model.vocab_.end()) model.byte_ids_[b] = it->second;
  }
  const auto& merges = config["merges"];
  model.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    // Older files write a merge as "left right", newer ones as ["left", "right"].
    std::string left, right;
    if (merges[rank].is_string()) {
      const std::string& m = merges[rank].get_ref<const std::string&>();
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("BPE merge ", rank, ": \"", m, "\""));
      }
      left = m.substr(0, space);
      right = m.substr(space + 1);
    } else if (merges[rank].is_array() && merges[rank].size() == 2 && merges[rank][0].is_string() &&
               merges[rank][1].is_string()) {
      left = merges[rank][0];
      right = merges[rank][1];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("BPE merge ", rank, ": bad format"));
    }
    const auto l = model.vocab_.find(left);
    const auto r = model.vocab_.find(right);
    const auto m = model.vocab_.find(left + right);
    if (l == model.vocab_.end() || r == model.vocab_.end() || m == model.vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("BPE merge ", rank, " (\"", left, "\", \"", right, "\") names no token"));
    }
    // A repeated pair keeps its first (lowest) rank.
    model.merges_.try_emplace(PairKey(l->second, r->second),
                              MergeResult{static_cast<uint32_t>(rank), m->second});
  }
  return model;
}

void BpeModel::Encode(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.size() == 1) {
    if (const int32_t id = byte_ids_[static_cast<uint8_t>(piece[0])]; id >= 0) ids.push_back(id);
    return;
  }
  // Pieces of a few bytes merge faster than a cache lookup costs; long ones rarely repeat.
  const bool cacheable =
      piece.size() >= BpeCache::kMinPieceBytes && piece.size() <= BpeCache::kMaxPieceBytes;
  if (cacheable && cache_->Lookup(piece, ids)) return;
  const size_t first = ids.size();
  Merge(piece, ids);
  if (cacheable) cache_->Insert(piece, std::span(ids).subspan(first));
}

void BpeModel::MergeSmall(std::string_view piece, std::vector<int32_t>& ids) const {
  // Arrays on the stack instead of a heap: rank[i] is the rank of the pair (symbol[i],
  // symbol[i + 1]). Each step merges the lowest-ranked pair, leftmost first, as the heap order
  // does, and only the two pairs next to it change.
  int32_t symbol[kSmallPiece];
  uint32_t rank[kSmallPiece];
  int32_t merged[kSmallPiece];
  size_t n = 0;
  for (const char c : piece) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) symbol[n++] = id;
  }
  constexpr uint32_t kNone = UINT32_MAX;
  const auto rank_pair = [&](size_t i) {
    const MergeResult* m = FindMerge(symbol[i], symbol[i + 1]);
    rank[i] = m ? m->rank : kNone;
    merged[i] = m ? m->id : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) rank_pair(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (rank[i] < rank[best]) best = i;
    }
    if (rank[best] == kNone) break;
    symbol[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) {
      symbol[i] = symbol[i + 1];
      rank[i] = rank[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0) rank_pair(best - 1);
    if (best + 1 < n) rank_pair(best);
  }
  ids.insert(ids.end(), symbol, symbol + n);
}

void BpeModel::Merge(std::string_view piece, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    std::string word;
    for (const char c : piece) AppendUtf8(ByteToCodePoint(static_cast<uint8_t>(c)), word);
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  if (piece.size() <= kSmallPiece) {
    MergeSmall(piece, ids);
    return;
  }
  // Symbols form a doubly linked list over the piece; a merge folds the right symbol into the
  // left one. Candidates are (rank, position) pairs in a min-heap; one that went stale (its
  // symbols changed since it was pushed) no longer names the same merge and is skipped.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  for (const char c : piece) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id < 0) continue;
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  const auto push = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (const MergeResult* m = FindMerge(symbols[pos].id, symbols[next].id)) {
      heap.push_back({m->rank, pos, m->id});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    const Symbol& right = symbols[left.next];
    const MergeResult* m = FindMerge(left.id, right.id);
    if (m == nullptr || m->id != top.id) continue;
    const int32_t gone = left.next;
    left.id = top.id;
    left.next = right.next;
    symbols[gone].id = -1;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    if (left.next >= 0) push(top.pos);
  }
  for (int32_t pos = 0; pos >= 0; pos = symbols[pos].next) ids.push_back(symbols[pos].id);
}

}  // namespace dsv3::tokenizer
