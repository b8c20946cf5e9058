// A thin owner of one compiled PCRE2 pattern (UTF + UCP, JIT-compiled when the platform has
// it), with the Oniguruma -> PCRE2 translation that Hugging Face patterns need.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

// PCRE2's compiled-pattern type (pcre2_code for 8-bit code units), declared here so that
// includers of this header do not see pcre2.h and its macros.
struct pcre2_real_code_8;

namespace dsv3::tokenizer {

// Hugging Face's tokenizers compile Split patterns with Oniguruma. PCRE2 reads the same syntax,
// with one difference that matters for tokenizer patterns: PCRE2's \s also matches U+180E
// (it uses \h), Oniguruma's is exactly Unicode White_Space. This rewrites \s and \S outside
// character classes, and \s inside them, to explicit White_Space classes.
std::string OnigurumaToPcre2(std::string_view pattern);

struct Match {
  size_t begin = 0;
  size_t end = 0;
};

class Regex {
 public:
  // Compiles `pattern` (PCRE2 syntax) with UTF and UCP.
  static absl::StatusOr<Regex> Compile(std::string_view pattern);

  // Finds the first match in subject[offset, size). The subject must be valid UTF-8 and
  // `offset` at a character boundary. Returns false when there is none. Safe to call from
  // several threads at once (scratch state is per thread).
  bool Find(std::string_view subject, size_t offset, Match* match) const;

 private:
  explicit Regex(std::shared_ptr<pcre2_real_code_8> code, bool jit)
      : code_(std::move(code)), jit_(jit) {}

  std::shared_ptr<pcre2_real_code_8> code_;
  bool jit_ = false;
};

}  // namespace dsv3::tokenizer
