#include "engine/tokenizer/byte_level.h"

#include <array>

namespace dsv3::tokenizer {
namespace {

bool StandsForItself(uint8_t b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

struct ByteTables {
  std::array<char32_t, 256> byte_to_cp;
  std::array<int16_t, 324> cp_to_byte;  // every mapped code point is below 256 + 68
};

const ByteTables& Tables() {
  static const ByteTables tables = [] {
    ByteTables t;
    t.cp_to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = StandsForItself(b) ? static_cast<char32_t>(b) : next++;
      t.byte_to_cp[b] = cp;
      t.cp_to_byte[cp] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return tables;
}

// Length of the well-formed sequence that starts with lead byte `b`, 0 when `b` cannot start one.
int SequenceLength(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Whether `b` may follow `lead` as the second byte (Unicode Table 3-7 narrows it for some leads).
bool ValidSecond(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

bool IsContinuation(uint8_t b) { return b >= 0x80 && b <= 0xBF; }

// How many bytes of the sequence starting at s[i] are well-formed (i.e. a prefix of a valid
// sequence), capped at its full length. 0 when s[i] is no lead byte.
size_t WellFormedRun(std::string_view s, size_t i, int* full_length) {
  const uint8_t lead = s[i];
  const int len = SequenceLength(lead);
  *full_length = len;
  if (len == 0) return 0;
  size_t n = 1;
  while (n < static_cast<size_t>(len) && i + n < s.size()) {
    const uint8_t b = s[i + n];
    if (!(n == 1 ? ValidSecond(lead, b) : IsContinuation(b))) break;
    ++n;
  }
  return n;
}

}  // namespace

char32_t ByteToCodePoint(uint8_t b) { return Tables().byte_to_cp[b]; }

int CodePointToByte(char32_t cp) {
  const auto& t = Tables().cp_to_byte;
  return cp < t.size() ? t[cp] : -1;
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string TokenToBytes(std::string_view token) {
  std::string bytes;
  size_t i = 0;
  while (i < token.size()) {
    int full = 0;
    const size_t run = WellFormedRun(token, i, &full);
    if (run == 0 || run < static_cast<size_t>(full)) return std::string(token);
    char32_t cp = static_cast<uint8_t>(token[i]) & (full == 1 ? 0x7F : (0xFF >> (full + 1)));
    for (int k = 1; k < full; ++k) cp = (cp << 6) | (static_cast<uint8_t>(token[i + k]) & 0x3F);
    const int b = CodePointToByte(cp);
    if (b < 0) return std::string(token);
    bytes.push_back(static_cast<char>(b));
    i += full;
  }
  return bytes;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII dominates real text: skip it eight bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t word;
      __builtin_memcpy(&word, s.data() + i, 8);
      if (word & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= s.size()) break;
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int full = 0;
    const size_t run = WellFormedRun(s, i, &full);
    if (run == 0 || run < static_cast<size_t>(full)) return false;
    i += full;
  }
  return true;
}

void AppendUtf8Lossy(std::string_view s, std::string& out) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t i = 0;
  size_t clean_from = 0;  // start of the well-formed stretch not yet copied
  while (i < s.size()) {
    int full = 0;
    const size_t run = WellFormedRun(s, i, &full);
    if (run != 0 && run == static_cast<size_t>(full)) {
      i += full;
      continue;
    }
    out.append(s.substr(clean_from, i - clean_from));
    out.append(kReplacement);
    i += run == 0 ? 1 : run;  // the maximal subpart: everything well-formed so far
    clean_from = i;
  }
  out.append(s.substr(clean_from));
}

size_t CompleteUtf8Prefix(std::string_view s) {
  // An unfinished character is at most 3 bytes long and starts with a lead byte.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const size_t i = s.size() - back;
    int full = 0;
    const size_t run = WellFormedRun(s, i, &full);
    if (full == 0) continue;  // a continuation byte: its lead, if any, is further back
    return full > 1 && run == back && back < static_cast<size_t>(full) ? i : s.size();
  }
  return s.size();
}

}  // namespace dsv3::tokenizer
