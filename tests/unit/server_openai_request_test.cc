// OpenAI request bodies -> engine requests, with no server: what each field becomes, that the
// prompt is the one the gRPC Chat call renders, and that every bad input is a 400 naming its
// field (or 404 for an unknown model).
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/openai_error.h"
#include "server/openai_request.h"
#include "tests/test_util.h"

namespace dsv3::server::openai::server_openai_request_test {
namespace {

using ::testing::HasSubstr;

const ModelLimits kLimits{.vocab_size = 129280,
                          .max_context = 4096,
                          .chat_template = ChatTemplate::kV3,
                          .sampling = {},
                          .max_tokens_fill_context = true,
                          .max_tokens_cap = 1000};
const std::vector<std::string> kNames = {"dsv3", "alias"};

const Tokenizer& RealTokenizer() {
  static const Tokenizer* tokenizer = Tokenizer::Load(DSV3_TOKENIZER_DIR)->release();
  return *tokenizer;
}

absl::StatusOr<ParsedRequest> Chat(const std::string& body) {
  return ParseRequest(Endpoint::kChat, body, kLimits, &RealTokenizer(), kNames);
}
absl::StatusOr<ParsedRequest> Completion(const std::string& body) {
  return ParseRequest(Endpoint::kCompletions, body, kLimits, &RealTokenizer(), kNames);
}

constexpr char kHello[] = R"("messages": [{"role": "user", "content": "Hello"}])";

TEST(OpenAiRequestTest, ChatFieldsBecomeTheEngineRequest) {
  auto r = Chat(std::string("{") + kHello + R"(, "model": "alias", "max_tokens": 7,
      "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.1, "presence_penalty": 0.2,
      "frequency_penalty": 0.3, "repetition_penalty": 1.1, "seed": 3, "stop": ["a", "b"],
      "n": 3, "stream": true, "stream_options": {"include_usage": true}, "logprobs": true,
      "top_logprobs": 4, "user": "u1", "metadata": {"k": "v"}})");
  ASSERT_TRUE(r.ok()) << r.status();
  const SamplingParams& s = r->request.sampling;
  EXPECT_EQ(r->model, "alias");
  EXPECT_EQ(s.max_tokens, 7);
  EXPECT_FLOAT_EQ(s.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.top_k, 40);
  EXPECT_FLOAT_EQ(s.min_p, 0.1f);
  EXPECT_FLOAT_EQ(s.presence_penalty, 0.2f);
  EXPECT_FLOAT_EQ(s.frequency_penalty, 0.3f);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.1f);
  EXPECT_EQ(s.seed, 3u);
  EXPECT_EQ(s.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.logprobs, 4);
  EXPECT_EQ(r->n, 3);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->top_logprobs, 4);

  // The same prompt as the gRPC Chat call renders.
  v1::ChatRequest grpc;
  v1::ChatMessage* m = grpc.add_messages();
  m->set_role("user");
  m->set_content("Hello");
  auto call = BuildChatCall(grpc, kLimits, &RealTokenizer());
  ASSERT_TRUE(call.ok());
  EXPECT_EQ(r->request.prompt_ids, call->request.prompt_ids);
}

TEST(OpenAiRequestTest, UnsetMaxTokensIsTheContextLeftUpToTheCap) {
  auto r = Chat(std::string("{") + kHello + "}");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request.sampling.max_tokens, 1000);  // the cap
  ModelLimits uncapped = kLimits;
  uncapped.max_tokens_cap = 0;
  auto all = ParseRequest(Endpoint::kChat, std::string("{") + kHello + "}", uncapped,
                          &RealTokenizer(), kNames);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->request.sampling.max_tokens,
            4096 - static_cast<int>(all->request.prompt_ids.size()));
  // max_completion_tokens is the newer name.
  auto named = Chat(std::string("{") + kHello + R"(, "max_completion_tokens": 5})");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->request.sampling.max_tokens, 5);
}

TEST(OpenAiRequestTest, LogprobsWithoutAlternativesStillAsksTheEngineForOne) {
  auto r = Chat(std::string("{") + kHello + R"(, "logprobs": true})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->top_logprobs, 0);
  EXPECT_EQ(r->request.sampling.logprobs, 1);
}

TEST(OpenAiRequestTest, ToolsAndToolTurnsAreRendered) {
  auto r = Chat(R"({"messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}]},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "21 C"}],
    "tools": [{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object"}}}]})");
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string prompt = RealTokenizer().Decode(r->request.prompt_ids);
  EXPECT_THAT(prompt, HasSubstr("Be brief.\n\n## Tools"));
  EXPECT_THAT(prompt, HasSubstr("### get_weather\nWeather of a city"));
  EXPECT_THAT(prompt, HasSubstr("<｜User｜>Weather in Paris?"));
  EXPECT_THAT(prompt, HasSubstr("function<｜tool▁sep｜>get_weather\n```json\n{\"city\": "
                                "\"Paris\"}\n```"));
  EXPECT_THAT(prompt, HasSubstr("<｜tool▁output▁begin｜>21 C<｜tool▁output▁end｜>"));
  // tool_choice none leaves the tools out.
  auto none = Chat(std::string("{") + kHello +
                   R"(, "tool_choice": "none", "tools": [{"type": "function", "function": {"name": "f"}}]})");
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(RealTokenizer().Decode(none->request.prompt_ids),
              ::testing::Not(HasSubstr("## Tools")));
}

TEST(OpenAiRequestTest, CompletionPromptsAndEcho) {
  auto text = Completion(R"({"prompt": "Hi there", "echo": true, "logprobs": 0})");
  ASSERT_FALSE(text.ok());  // echo with logprobs would need prompt logprobs
  EXPECT_EQ(ParamOf(text.status()), "echo");
  auto echoed = Completion(R"({"prompt": ["Hi there"], "echo": true, "max_tokens": 3})");
  ASSERT_TRUE(echoed.ok()) << echoed.status();
  EXPECT_EQ(echoed->echo_prefix, "Hi there");
  auto ids = Completion(R"({"prompt": [5, 6, 7], "logprobs": 2, "max_tokens": 3})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->request.prompt_ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_TRUE(ids->logprobs);
  EXPECT_EQ(ids->top_logprobs, 2);
  EXPECT_EQ(ids->request.sampling.logprobs, 2);
}

struct BadBody {
  Endpoint endpoint;
  std::string body;
  absl::StatusCode code;
  std::string param;
};

TEST(OpenAiRequestTest, EveryBadInputNamesItsField) {
  const std::string hello = std::string("{") + kHello + ", ";
  const auto chat = Endpoint::kChat;
  const auto completion = Endpoint::kCompletions;
  const auto invalid = absl::StatusCode::kInvalidArgument;
  const std::vector<BadBody> cases = {
      {chat, "[1]", invalid, ""},
      {chat, hello + R"("temperature": "hot"})", invalid, "temperature"},
      {chat, hello + R"("temperature": -1})", invalid, "temperature"},
      {chat, hello + R"("top_p": 0})", invalid, "top_p"},
      {chat, hello + R"("top_k": -2})", invalid, "top_k"},
      {chat, hello + R"("max_tokens": 0})", invalid, "max_tokens"},
      {chat, hello + R"("max_tokens": 5000})", invalid, "max_tokens"},
      {chat, hello + R"("max_tokens": 5, "max_completion_tokens": 6})", invalid,
       "max_completion_tokens"},
      {chat, hello + R"("n": 0})", invalid, "n"},
      {chat, hello + R"("n": 17})", invalid, "n"},
      {chat, hello + R"("stop": 5})", invalid, "stop"},
      {chat, hello + R"("stop": [""]})", invalid, "stop[0]"},
      {chat, hello + R"("seed": 1.5})", invalid, "seed"},
      {chat, hello + R"("top_logprobs": 2})", invalid, "top_logprobs"},
      {chat, hello + R"("logprobs": true, "top_logprobs": 21})", invalid, "top_logprobs"},
      {chat, hello + R"("stream_options": {"include_usage": true}})", invalid, "stream_options"},
      {chat, hello + R"("stream": true, "stream_options": {"x": 1}})", invalid,
       "stream_options.x"},
      {chat, hello + R"("response_format": {"type": "json_schema"}})", invalid, "response_format"},
      {chat, hello + R"("logit_bias": {"5": 10}})", invalid, "logit_bias"},
      {chat, hello + R"("functions": []})", invalid, "functions"},
      {chat, hello + R"("tool_choice": "required", "tools": []})", invalid, "tool_choice"},
      {chat, hello + R"("tools": [{"type": "retrieval"}]})", invalid, "tools[0]"},
      {chat, hello + R"("model": 5})", invalid, "model"},
      {chat, hello + R"("model": "gpt-4"})", absl::StatusCode::kNotFound, "model"},
      {chat, R"({"messages": []})", invalid, "messages"},
      {chat, R"({"messages": "hi"})", invalid, "messages"},
      {chat, R"({"messages": [{"role": "wizard", "content": "x"}]})", invalid,
       "messages[0].role"},
      {chat, R"({"messages": [{"role": "user", "content": "x", "audio": 1}]})", invalid,
       "messages[0].audio"},
      {chat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", invalid,
       "messages[0].content[0]"},
      {chat, R"({"messages": [{"role": "user", "content": "\ud800"}]})", invalid, ""},
      {chat, hello + R"("echo": true})", invalid, "echo"},
      {completion, R"({"max_tokens": 3})", invalid, "prompt"},
      {completion, R"({"prompt": ["a", "b"]})", invalid, "prompt"},
      {completion, R"({"prompt": [1, "a"]})", invalid, "prompt"},
      {completion, R"({"prompt": [200000]})", invalid, "prompt"},
      {completion, R"({"prompt": "a", "suffix": "b"})", invalid, "suffix"},
      {completion, R"({"prompt": "a", "best_of": 2})", invalid, "best_of"},
      {completion, R"({"prompt": "a", "logprobs": true})", invalid, "logprobs"},
      {completion, R"({"prompt": "a", "messages": []})", invalid, "messages"},
  };
  for (const BadBody& c : cases) {
    auto r = ParseRequest(c.endpoint, c.body, kLimits, &RealTokenizer(), kNames);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), c.code) << c.body << ": " << r.status();
    if (!c.param.empty()) {
      EXPECT_EQ(ParamOf(r.status()).value_or("(none)"), c.param) << c.body << ": " << r.status();
    }
    const ApiError e = ToApiError(r.status());
    EXPECT_EQ(e.http_status, c.code == invalid ? 400 : 404);
    EXPECT_THAT(e.message, ::testing::Not(HasSubstr("sampling."))) << e.message;
  }
}

TEST(OpenAiRequestTest, ChatNeedsATokenizer) {
  auto r = ParseRequest(Endpoint::kChat, std::string("{") + kHello + "}", kLimits, nullptr,
                        kNames);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ToApiError(r.status()).http_status, 400);
}

}  // namespace
}  // namespace dsv3::server::openai::server_openai_request_test
