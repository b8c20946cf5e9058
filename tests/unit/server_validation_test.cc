// Request validation: every way a client can get a request wrong gets the right code and a
// message naming the field and the value.
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/validation.h"
#include "tests/test_util.h"

namespace dsv3::server::server_validation_test {
namespace {

using ::testing::HasSubstr;

constexpr ModelLimits kLimits{.vocab_size = 129280, .max_context = 4096};

const Tokenizer& RealTokenizer() {
  static const Tokenizer* tokenizer = Tokenizer::Load(DSV3_TOKENIZER_DIR)->release();
  return *tokenizer;
}

v1::GenerateRequest IdsRequest(std::initializer_list<int32_t> ids) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  return r;
}

struct BadCase {
  const char* name;
  v1::GenerateRequest request;
  absl::StatusCode code;
  const char* message;  // a substring of the expected message
};

std::vector<BadCase> BadGenerateRequests() {
  std::vector<BadCase> cases;
  auto add = [&](const char* name, auto mutate, absl::StatusCode code, const char* message) {
    v1::GenerateRequest r = IdsRequest({0, 17, 99});
    mutate(r);
    cases.push_back({name, r, code, message});
  };
  using C = absl::StatusCode;
  add(
      "no prompt", [](auto& r) { r.clear_prompt(); }, C::kInvalidArgument, "prompt is not set");
  add(
      "empty ids", [](auto& r) { r.mutable_token_ids()->clear_ids(); }, C::kInvalidArgument,
      "prompt token_ids is empty");
  add(
      "empty text", [](auto& r) { r.set_text(""); }, C::kInvalidArgument, "prompt text is empty");
  add(
      "negative id", [](auto& r) { r.mutable_token_ids()->add_ids(-1); }, C::kInvalidArgument,
      "prompt token_ids[3] = -1 is outside the vocabulary [0, 129280)");
  add(
      "id past vocab", [](auto& r) { r.mutable_token_ids()->set_ids(1, 129280); },
      C::kInvalidArgument, "token_ids[1] = 129280 is outside the vocabulary");
  add(
      "context", [](auto& r) { r.mutable_sampling()->set_max_tokens(4094); }, C::kInvalidArgument,
      "prompt (3 tokens) + sampling.max_tokens (4094) = 4097 exceeds the context limit of 4096");
  add(
      "max_tokens 0", [](auto& r) { r.mutable_sampling()->set_max_tokens(0); }, C::kInvalidArgument,
      "sampling.max_tokens must be >= 1, got 0");
  add(
      "temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-1); },
      C::kInvalidArgument, "sampling.temperature must be >= 0, got -1");
  add(
      "temperature nan", [](auto& r) { r.mutable_sampling()->set_temperature(NAN); },
      C::kInvalidArgument, "sampling.temperature must be >= 0");
  add(
      "top_p", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, C::kInvalidArgument,
      "sampling.top_p must be in (0, 1], got 0");
  add(
      "top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-2); }, C::kInvalidArgument,
      "sampling.top_k");
  add(
      "min_p", [](auto& r) { r.mutable_sampling()->set_min_p(1.5); }, C::kInvalidArgument,
      "sampling.min_p must be in [0, 1], got 1.5");
  add(
      "repetition_penalty", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); },
      C::kInvalidArgument, "sampling.repetition_penalty must be > 0");
  add(
      "presence_penalty", [](auto& r) { r.mutable_sampling()->set_presence_penalty(3); },
      C::kInvalidArgument, "sampling.presence_penalty must be in [-2, 2], got 3");
  add(
      "frequency_penalty", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(-2.5); },
      C::kInvalidArgument, "sampling.frequency_penalty must be in [-2, 2]");
  add(
      "min_tokens", [](auto& r) { r.mutable_sampling()->set_min_tokens(20); }, C::kInvalidArgument,
      "sampling.min_tokens must be <= max_tokens (16), got 20");
  add(
      "logprobs", [](auto& r) { r.mutable_sampling()->set_logprobs(21); }, C::kInvalidArgument,
      "sampling.logprobs must be in [0, 20], got 21");
  add(
      "too many stops",
      [](auto& r) {
        for (int i = 0; i < 17; ++i) r.mutable_sampling()->add_stop("s" + std::to_string(i));
      },
      C::kInvalidArgument, "sampling.stop has 17 strings; at most 16 are allowed");
  add(
      "empty stop", [](auto& r) { r.mutable_sampling()->add_stop(""); }, C::kInvalidArgument,
      "sampling.stop[0] must not be empty");
  add(
      "stop utf8", [](auto& r) { r.mutable_sampling()->add_stop("ok\xC3"); }, C::kInvalidArgument,
      "sampling.stop[0] is not valid UTF-8 (truncated at byte 2)");
  add(
      "stop id", [](auto& r) { r.mutable_sampling()->add_stop_token_ids(200000); },
      C::kInvalidArgument, "sampling.stop_token_ids[0] = 200000 is outside the vocabulary");
  add(
      "text utf8", [](auto& r) { r.set_text("caf\xE9"); }, C::kInvalidArgument,
      "prompt text is not valid UTF-8");
  add(
      "overlong utf8", [](auto& r) { r.set_text("\xC0\xAF"); }, C::kInvalidArgument,
      "prompt text is not valid UTF-8 (at byte 0)");
  add(
      "surrogate", [](auto& r) { r.set_text("\xED\xA0\x80"); }, C::kInvalidArgument,
      "prompt text is not valid UTF-8");
  add(
      "nothing returned",
      [](auto& r) {
        r.set_return_text(false);
        r.set_return_token_ids(false);
      },
      C::kInvalidArgument, "return_token_ids and return_text are both false");
  return cases;
}

TEST(ServerValidation, EveryBadGenerateRequestIsNamed) {
  for (const BadCase& c : BadGenerateRequests()) {
    SCOPED_TRACE(c.name);
    auto call = BuildGenerateCall(c.request, kLimits, &RealTokenizer());
    ASSERT_FALSE(call.ok());
    EXPECT_EQ(call.status().code(), c.code);
    EXPECT_THAT(std::string(call.status().message()), HasSubstr(c.message));
  }
}

TEST(ServerValidation, TextNeedsATokenizerButIdsDoNot) {
  v1::GenerateRequest text;
  text.set_text("hello");
  auto call = BuildGenerateCall(text, kLimits, nullptr);
  EXPECT_EQ(call.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(call.status().message()), HasSubstr("needs a tokenizer"));

  v1::GenerateRequest stop = IdsRequest({1, 2});
  stop.mutable_sampling()->add_stop("x");
  EXPECT_EQ(BuildGenerateCall(stop, kLimits, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::GenerateRequest want_text = IdsRequest({1, 2});
  want_text.set_return_text(true);
  EXPECT_EQ(BuildGenerateCall(want_text, kLimits, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);

  auto ids = BuildGenerateCall(IdsRequest({1, 2}), kLimits, nullptr);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_TRUE(ids->return_token_ids);
  EXPECT_FALSE(ids->return_text);
  EXPECT_FALSE(ids->request.detokenize);
}

TEST(ServerValidation, GoodRequestsBecomeEngineRequests) {
  v1::GenerateRequest r;
  r.set_text("Hello, world");
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_max_tokens(7);
  r.mutable_sampling()->add_stop("\n\n");
  r.mutable_sampling()->set_seed(42);
  auto call = BuildGenerateCall(r, kLimits, &RealTokenizer());
  ASSERT_TRUE(call.ok()) << call.status();
  const EngineRequest& er = call->request;
  ASSERT_FALSE(er.prompt_ids.empty());
  EXPECT_EQ(er.prompt_ids[0], RealTokenizer().bos_id());  // BOS by default for text
  EXPECT_EQ(er.sampling.max_tokens, 7);
  EXPECT_EQ(er.sampling.temperature, 0);
  EXPECT_EQ(er.sampling.seed, 42u);
  EXPECT_EQ(er.sampling.stop, std::vector<std::string>{"\n\n"});
  EXPECT_TRUE(call->return_text);
  EXPECT_TRUE(er.detokenize);

  r.set_add_bos_token(false);
  auto no_bos = BuildGenerateCall(r, kLimits, &RealTokenizer());
  ASSERT_TRUE(no_bos.ok());
  EXPECT_EQ(no_bos->request.prompt_ids.size() + 1, er.prompt_ids.size());

  // Exactly at the context limit is allowed.
  v1::GenerateRequest edge = IdsRequest({1, 2, 3, 4});
  edge.mutable_sampling()->set_max_tokens(4092);
  EXPECT_TRUE(BuildGenerateCall(edge, kLimits, nullptr).ok());
}

TEST(ServerValidation, Utf8) {
  EXPECT_TRUE(CheckUtf8("", "f").ok());
  EXPECT_TRUE(CheckUtf8("plain ascii", "f").ok());
  EXPECT_TRUE(CheckUtf8("caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80", "f").ok());
  EXPECT_TRUE(CheckUtf8("\xF4\x8F\xBF\xBF", "f").ok());   // U+10FFFF
  EXPECT_FALSE(CheckUtf8("\xF4\x90\x80\x80", "f").ok());  // past U+10FFFF
  EXPECT_FALSE(CheckUtf8("\xE0\x80\x80", "f").ok());      // overlong
  EXPECT_FALSE(CheckUtf8("\x80", "f").ok());              // lone continuation
  EXPECT_FALSE(CheckUtf8("\xFF", "f").ok());
  EXPECT_EQ(CheckUtf8("ab\xE4\xB8", "field").message(),
            "field is not valid UTF-8 (truncated at byte 2)");
}

TEST(ServerValidation, RequestId) {
  EXPECT_EQ(*ClientRequestId("abc"), "abc");
  EXPECT_THAT(std::string(ClientRequestId(std::string(129, 'x')).status().message()),
              HasSubstr("request_id is 129 bytes; at most 128"));
  EXPECT_FALSE(ClientRequestId("\xFF").ok());
}

// Bug 5: a request id with a newline or an escape sequence was accepted and written raw into
// the log, forging log lines.
TEST(ServerValidation, RequestIdWithControlCharactersIsRejected) {
  const auto forged = ClientRequestId("r1\n2026-01-01T00:00:00.000 info r2 Generate: stop");
  ASSERT_FALSE(forged.ok());
  EXPECT_EQ(forged.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(forged.status().message(),
            "request_id has the control character U+000A at byte 2; only printable characters "
            "are allowed");
  EXPECT_THAT(std::string(ClientRequestId("\x1b[31mred").status().message()),
              HasSubstr("U+001B at byte 0"));
  EXPECT_THAT(std::string(ClientRequestId("a\x7f").status().message()), HasSubstr("U+007F"));
  EXPECT_THAT(std::string(ClientRequestId("a\xC2\x9B").status().message()),
              HasSubstr("U+009B at byte 1"));  // C1 CSI
  EXPECT_FALSE(ClientRequestId(std::string("a\0b", 3)).ok());
  EXPECT_FALSE(ClientRequestId("tab\there").ok());
  // Printable text, including non-ASCII, is still an id.
  EXPECT_EQ(*ClientRequestId("req-42 caf\xC3\xA9 \xE2\x82\xAC"), "req-42 caf\xC3\xA9 \xE2\x82\xAC");
  EXPECT_EQ(*ClientRequestId("\xC2\xA0nbsp"), "\xC2\xA0nbsp");
}

v1::ChatRequest Chat(std::initializer_list<std::pair<const char*, const char*>> turns) {
  v1::ChatRequest r;
  for (const auto& [role, content] : turns) {
    auto* m = r.add_messages();
    m->set_role(role);
    m->set_content(content);
  }
  return r;
}

TEST(ServerValidation, ChatRequests) {
  const Tokenizer& tok = RealTokenizer();
  auto v3 = BuildChatCall(Chat({{"system", "Be brief."}, {"user", "Hi"}}), kLimits, &tok);
  ASSERT_TRUE(v3.ok()) << v3.status();
  EXPECT_EQ(v3->chat_template, ChatTemplate::kV3);
  EXPECT_EQ(tok.Decode(v3->request.prompt_ids),
            "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>");

  v1::ChatRequest r1 = Chat({{"user", "Why?"}});
  r1.set_template_(v1::CHAT_TEMPLATE_R1);
  auto r1_call = BuildChatCall(r1, kLimits, &tok);
  ASSERT_TRUE(r1_call.ok()) << r1_call.status();
  EXPECT_TRUE(r1_call->prompt_opened_think);

  struct Case {
    v1::ChatRequest request;
    const char* message;
  };
  v1::ChatRequest no_content;
  no_content.add_messages()->set_role("user");
  v1::ChatRequest tool_on_user = Chat({{"user", "x"}});
  tool_on_user.mutable_messages(0)->add_tool_calls()->set_name("f");
  v1::ChatRequest bad_template = Chat({{"user", "x"}});
  bad_template.set_template_(static_cast<v1::ChatTemplate>(9));
  for (const Case& c : std::vector<Case>{
           {v1::ChatRequest(), "messages is empty"},
           {Chat({{"robot", "x"}}), "messages[0].role 'robot' is not one of system, user"},
           {Chat({{"user", "ok"}, {"user", "\xC3("}}), "messages[1].content is not valid UTF-8"},
           {no_content, "messages[0].content is unset"},
           {tool_on_user, "messages[0].tool_calls are only allowed on assistant turns"},
           {bad_template, "template 9 is not a known chat template"},
       }) {
    auto call = BuildChatCall(c.request, kLimits, &tok);
    ASSERT_FALSE(call.ok()) << c.message;
    EXPECT_EQ(call.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(call.status().message()), HasSubstr(c.message));
  }
  EXPECT_EQ(BuildChatCall(Chat({{"user", "x"}}), kLimits, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Issue 17: an operator reading a limit error learns which flag sets the limit.
TEST(ValidationTest, LimitErrorsNameTheFlagThatSetsTheLimit) {
  ModelLimits limits = kLimits;
  limits.max_tokenize_bytes = 10;
  limits.max_tokens_fill_context = true;
  const std::vector<int32_t> long_prompt(4096, 5);
  SamplingParams over;
  over.max_tokens = 4094;
  SamplingParams unset;
  const struct {
    const char* name;
    absl::Status status;
    const char* flag;
    const char* limit;  // the limit's value, as the message gives it
  } cases[] = {
      {"prompt + max_tokens", CheckPrompt(std::vector<int32_t>{1, 2, 3}, over, limits, "prompt"),
       "(--max-model-len)", "4096"},
      {"prompt fills the context", FillDefaultMaxTokens(unset, false, long_prompt.size(), limits),
       "(--max-model-len)", "4096"},
      {"text to tokenize", CheckTokenizeSize(11, limits, "prompt text"), "(--max-tokenize-bytes)",
       "10"},
      {"n", CheckChoices(17).status(), "a fixed limit of this server", "16"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(c.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status.message(), HasSubstr(c.flag));
    EXPECT_THAT(c.status.message(), HasSubstr(c.limit));
  }
}

}  // namespace
}  // namespace dsv3::server::server_validation_test
