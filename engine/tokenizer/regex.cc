#include "engine/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dsv3::tokenizer {
namespace {

// Unicode White_Space, which Oniguruma's \s matches.
constexpr char kWhiteSpaceItems[] =
    "\\t\\n\\x0B\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// Per-thread matching scratch: match data big enough for the whole-match offsets, and a JIT
// stack larger than the 32 KiB default so that long runs of one class never exhaust it.
struct Scratch {
  Scratch()
      : data(pcre2_match_data_create(1, nullptr)),
        context(pcre2_match_context_create(nullptr)),
        jit_stack(pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr)) {
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~Scratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  pcre2_match_data* data;
  pcre2_match_context* context;
  pcre2_jit_stack* jit_stack;
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace

std::string OnigurumaToPcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  int class_depth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's' && class_depth == 0) {
        absl::StrAppend(&out, "[", kWhiteSpaceItems, "]");
      } else if (e == 's') {
        out.append(kWhiteSpaceItems);
      } else if (e == 'S' && class_depth == 0) {
        absl::StrAppend(&out, "[^", kWhiteSpaceItems, "]");
      } else {
        out.push_back(c);
        out.push_back(e);
      }
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<Regex> Regex::Compile(std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("regex \"", std::string(pattern),
                                                   "\" at offset ", error_offset, ": ",
                                                   reinterpret_cast<char*>(message)));
  }
  // JIT is an optimisation: where the platform lacks it, the interpreter gives the same matches.
  const bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return Regex(std::shared_ptr<pcre2_code>(code, pcre2_code_free), jit);
}

bool Regex::Find(std::string_view subject, size_t offset, Match* match) const {
  Scratch& scratch = ThreadScratch();
  const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc = PCRE2_ERROR_JIT_STACKLIMIT;
  if (jit_) {
    rc = pcre2_jit_match(code_.get(), data, subject.size(), offset, 0, scratch.data,
                         scratch.context);
  }
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    // The interpreter keeps its backtracking frames on the heap, so it copes where JIT's fixed
    // stack did not.
    rc = pcre2_match(code_.get(), data, subject.size(), offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                     scratch.data, nullptr);
  }
  // Besides "no match", a match that hits PCRE2's resource limits also ends the search: the rest
  // of the subject then stays one piece.
  if (rc < 0) return false;
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
  match->begin = ovector[0];
  match->end = ovector[1];
  return true;
}

}  // namespace dsv3::tokenizer
