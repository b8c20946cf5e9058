#include "engine/kv/block_hash.h"

#include <bit>
#include <vector>

#include "absl/random/random.h"

namespace dsv3 {
namespace {

struct SipState {
  uint64_t v0, v1, v2, v3;

  void Round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }

  void Compress(uint64_t m) {
    v3 ^= m;
    Round();
    Round();
    v0 ^= m;
  }
};

uint64_t LoadLittleEndian(const uint8_t* p, size_t n) {
  uint64_t word = 0;
  for (size_t i = 0; i < n; ++i) word |= static_cast<uint64_t>(p[i]) << (8 * i);
  return word;
}

void AppendLittleEndian(uint64_t value, int bytes, std::vector<uint8_t>& out) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

}  // namespace

uint64_t SipHash24(uint64_t k0, uint64_t k1, absl::Span<const uint8_t> data) {
  SipState s{k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL, k0 ^ 0x6c7967656e657261ULL,
             k1 ^ 0x7465646279746573ULL};
  const size_t full = data.size() / 8 * 8;
  for (size_t i = 0; i < full; i += 8) s.Compress(LoadLittleEndian(data.data() + i, 8));
  // Last word: the remaining bytes, and the message length modulo 256 in the top byte.
  s.Compress(LoadLittleEndian(data.data() + full, data.size() - full) |
             (static_cast<uint64_t>(data.size()) << 56));
  s.v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) s.Round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

BlockHasher BlockHasher::WithRandomKey() {
  absl::BitGen gen;
  Key key;
  for (uint64_t& word : key) word = absl::Uniform<uint64_t>(gen);
  return BlockHasher(key);
}

BlockHash BlockHasher::Hash(const BlockHash& parent, absl::Span<const int32_t> tokens) const {
  // Message: parent.lo, parent.hi (8 bytes each), then each token id (4 bytes), little-endian.
  std::vector<uint8_t> message;
  message.reserve(16 + 4 * tokens.size());
  AppendLittleEndian(parent.lo, 8, message);
  AppendLittleEndian(parent.hi, 8, message);
  for (int32_t token : tokens) AppendLittleEndian(static_cast<uint32_t>(token), 4, message);
  return BlockHash{SipHash24(key_[0], key_[1], message), SipHash24(key_[2], key_[3], message)};
}

}  // namespace dsv3
