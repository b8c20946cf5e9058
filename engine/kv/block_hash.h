// Keyed hashes of full KV blocks, the keys of the prefix cache.
//
// A block's hash covers its own token ids and, through the parent hash, every token before it:
// hash(block i) = H(key, hash(block i - 1), tokens of block i). H is SipHash-2-4 under a secret
// key drawn once per BlockHasher, so a client that controls prompts cannot construct two different
// prefixes with the same hash. Two SipHash-2-4 outputs under independent keys make the hash 128
// bits wide; the cache still compares token ids on every hit.
#pragma once

#include <array>
#include <cstdint>

#include "absl/types/span.h"

namespace dsv3 {

struct BlockHash {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const BlockHash&, const BlockHash&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockHash& b) {
    return H::combine(std::move(h), b.lo, b.hi);
  }
};

// SipHash-2-4 (Aumasson and Bernstein, 2012) of `data` under the 128-bit key (k0, k1), where k0
// holds key bytes 0..7 and k1 bytes 8..15, both little-endian.
uint64_t SipHash24(uint64_t k0, uint64_t k1, absl::Span<const uint8_t> data);

class BlockHasher {
 public:
  using Key = std::array<uint64_t, 4>;

  explicit BlockHasher(const Key& key) : key_(key) {}
  // A hasher with a key from the operating system's entropy source.
  static BlockHasher WithRandomKey();

  // The hash of a block holding `tokens` that follows a block hashed to `parent`; the first block
  // of a sequence has the parent BlockHash{}.
  BlockHash Hash(const BlockHash& parent, absl::Span<const int32_t> tokens) const;

 private:
  Key key_;
};

}  // namespace dsv3
