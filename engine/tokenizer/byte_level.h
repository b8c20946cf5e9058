// Byte-level helpers shared by the tokenizer: GPT-2's byte <-> printable-character mapping that
// byte-level BPE vocabularies are written in, and the UTF-8 checks that decoding needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv3::tokenizer {

// The code point that byte `b` is written as in a byte-level vocabulary. Printable Latin-1 bytes
// stand for themselves; the other 68 bytes are shifted to U+0100 and up, in byte order.
char32_t ByteToCodePoint(uint8_t b);

// Inverse of ByteToCodePoint; returns -1 for a code point that stands for no byte.
int CodePointToByte(char32_t cp);

// Appends the UTF-8 encoding of `cp` (which must be a Unicode scalar value).
void AppendUtf8(char32_t cp, std::string& out);

// Converts a token as written in the vocabulary to the bytes it stands for, as Hugging Face's
// ByteLevel decoder does: when every character maps to a byte, those bytes; otherwise (added
// tokens such as "<｜User｜>") the token's own UTF-8 bytes, unchanged.
std::string TokenToBytes(std::string_view token);

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool IsValidUtf8(std::string_view s);

// Appends `s` with every maximal ill-formed subsequence replaced by U+FFFD, the substitution that
// Rust's String::from_utf8_lossy makes (and hence Hugging Face decode).
void AppendUtf8Lossy(std::string_view s, std::string& out);

// The length of the longest prefix of `s` after which no UTF-8 character is left unfinished:
// `s` minus a trailing, so far well-formed, but incomplete multi-byte sequence.
size_t CompleteUtf8Prefix(std::string_view s);

}  // namespace dsv3::tokenizer
