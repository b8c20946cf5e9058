// libFuzzer target over the tokenizer: arbitrary bytes through Encode, Decode, the streaming
// detokenizer and the streaming parsers. Besides crashes and ASan reports, it traps when an
// invariant breaks:
//   - Decode(Encode(x)) is x with ill-formed UTF-8 replaced (byte-level BPE loses nothing);
//   - the detokenizer's deltas are well-formed and concatenate to Decode, for any ids;
//   - the streaming parsers give the same result whichever way the text is cut.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/detokenizer.h"
#include "engine/tokenizer/reasoning_parser.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tool_call_parser.h"

namespace {

const dsv3::Tokenizer& V3() {
  static const std::unique_ptr<dsv3::Tokenizer> tokenizer = [] {
    auto t = dsv3::Tokenizer::Load(DSV3_TOKENIZER_DIR);
    if (!t.ok()) __builtin_trap();
    return *std::move(t);
  }();
  return *tokenizer;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckDetokenizer(const std::vector<int32_t>& ids, bool skip_special) {
  dsv3::IncrementalDetokenizer detok(V3(), skip_special);
  std::string all;
  for (const int32_t id : ids) {
    const std::string delta = detok.Push(id);
    Check(dsv3::tokenizer::IsValidUtf8(delta));
    all += delta;
  }
  const std::string last = detok.Flush();
  Check(dsv3::tokenizer::IsValidUtf8(last));
  Check(all + last == V3().Decode(ids, skip_special));
}

// The parsers' output for `text` delivered as two deltas cut at `cut`, flattened to one string.
std::string Reasoning(bool prompt_opened_think, std::string_view text, size_t cut) {
  dsv3::ReasoningParser parser(prompt_opened_think);
  std::string reasoning, content;
  for (const auto& d :
       {parser.Push(text.substr(0, cut)), parser.Push(text.substr(cut)), parser.Flush()}) {
    reasoning += d.reasoning;
    content += d.content;
  }
  return reasoning + '\0' + content;
}

std::string ToolCalls(std::string_view text, size_t cut) {
  dsv3::ToolCallParser parser;
  std::string content, calls;
  for (const auto& d :
       {parser.Push(text.substr(0, cut)), parser.Push(text.substr(cut)), parser.Flush()}) {
    content += d.content;
    for (const auto& c : d.tool_calls) calls += c.type + '\0' + c.name + '\0' + c.arguments + '\0';
  }
  return content + '\1' + calls;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const std::vector<int32_t> ids = V3().Encode(input);
  std::string expected;
  dsv3::tokenizer::AppendUtf8Lossy(input, expected);
  Check(V3().Decode(ids) == expected);
  CheckDetokenizer(ids, /*skip_special=*/false);

  // The same bytes read as arbitrary ids, most of them out of range.
  std::vector<int32_t> raw_ids(size / 4);
  if (!raw_ids.empty()) std::memcpy(raw_ids.data(), data, raw_ids.size() * 4);
  for (int32_t& id : raw_ids) id %= V3().vocab_size() + 16;
  CheckDetokenizer(raw_ids, /*skip_special=*/true);

  const size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  for (const bool opened : {false, true}) {
    Check(Reasoning(opened, input, cut) == Reasoning(opened, input, size));
  }
  Check(ToolCalls(input, cut) == ToolCalls(input, size));
  return 0;
}
