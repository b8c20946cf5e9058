// libFuzzer target over request validation: arbitrary bytes parsed as a GenerateRequest and as a
// ChatRequest (wire format), then validated as the server does, with the real DeepSeek-V3
// tokenizer. Besides crashes and sanitizer reports, it traps when an accepted request breaks what
// the engine relies on: a prompt that is empty, has ids outside the vocabulary or does not fit
// the context.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "server/validation.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

const dsv3::Tokenizer& V3() {
  static const std::unique_ptr<dsv3::Tokenizer> tokenizer = [] {
    auto t = dsv3::Tokenizer::Load(DSV3_TOKENIZER_DIR);
    Check(t.ok());
    return *std::move(t);
  }();
  return *tokenizer;
}

void CheckAccepted(const dsv3::EngineRequest& r, const dsv3::server::ModelLimits& limits) {
  Check(!r.prompt_ids.empty());
  for (const int32_t id : r.prompt_ids) Check(id >= 0 && id < limits.vocab_size);
  Check(static_cast<int64_t>(r.prompt_ids.size()) + r.sampling.max_tokens <= limits.max_context);
  Check(r.sampling.Validate().ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A small context and tokenize bound, so that the limits are reached by short inputs.
  const dsv3::server::ModelLimits limits = {.vocab_size = 129280,
                                            .max_context = 4096,
                                            .max_tokenize_bytes = 2048,
                                            .special_tokens_in_messages = (size % 2) == 1};
  dsv3::v1::GenerateRequest generate;
  if (generate.ParseFromArray(data, static_cast<int>(size))) {
    for (const dsv3::Tokenizer* tokenizer : {&V3(), static_cast<const dsv3::Tokenizer*>(nullptr)}) {
      auto call = dsv3::server::BuildGenerateCall(generate, limits, tokenizer);
      if (call.ok()) CheckAccepted(call->request, limits);
    }
  }
  dsv3::v1::ChatRequest chat;
  if (chat.ParseFromArray(data, static_cast<int>(size))) {
    auto call = dsv3::server::BuildChatCall(chat, limits, &V3());
    if (call.ok()) CheckAccepted(call->request, limits);
  }
  (void)dsv3::server::ClientRequestId(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
