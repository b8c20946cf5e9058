// The byte-level BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}):
// a piece's bytes start as one symbol each and adjacent pairs merge, lowest merge rank first,
// leftmost first among equal ranks, until no listed merge applies.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace dsv3::tokenizer {

class BpeCache;

class BpeModel {
 public:
  // `config` is tokenizer.json's "model". Checks that it is BPE without dropout, unk-free
  // byte-level (every merge names known tokens and yields a known token).
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& config);

  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids of `piece`, given as raw bytes. Thread-safe.
  void Encode(std::string_view piece, std::vector<int32_t>& ids) const;

  // The vocabulary as written in the file (byte-level characters, e.g. "Ġthe").
  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct MergeResult {
    uint32_t rank;
    int32_t id;
  };

  BpeModel();
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
  }
  const MergeResult* FindMerge(int32_t left, int32_t right) const {
    auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void Merge(std::string_view piece, std::vector<int32_t>& ids) const;
  // Merge for pieces of at most kSmallPiece bytes, the common case.
  static constexpr size_t kSmallPiece = 32;
  void MergeSmall(std::string_view piece, std::vector<int32_t>& ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::array<int32_t, 256> byte_ids_;  // -1: the byte has no token and is dropped, as in HF
  absl::flat_hash_map<uint64_t, MergeResult> merges_;
  bool ignore_merges_ = false;
  std::unique_ptr<BpeCache> cache_;
};

}  // namespace dsv3::tokenizer
