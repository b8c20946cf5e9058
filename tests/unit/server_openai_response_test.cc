// Engine output -> OpenAI responses, with no server: tool calls and R1 reasoning split out of
// the text (whole and as stream deltas), logprobs with token text and bytes, finish reasons,
// usage over several choices, the error shape; and the serving defaults read from a checkpoint.
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/openai_error.h"
#include "server/openai_response.h"
#include "server/serving_defaults.h"
#include "tests/test_util.h"

namespace dsv3::server::openai::server_openai_response_test {
namespace {

using ::dsv3::testing::TempDir;

using json = nlohmann::json;

const Tokenizer& RealTokenizer() {
  static const Tokenizer* tokenizer = Tokenizer::Load(DSV3_TOKENIZER_DIR)->release();
  return *tokenizer;
}

OutputDelta Text(std::string text) {
  OutputDelta d;
  d.text = std::move(text);
  d.token_ids = {1};
  return d;
}

OutputDelta Last(std::string text, FinishReason reason) {
  OutputDelta d = Text(std::move(text));
  d.finish_reason = reason;
  d.prompt_tokens = 10;
  d.completion_tokens = 3;
  d.cached_tokens = 4;
  return d;
}

const ResponseMeta kMeta{.id = "chatcmpl-r1", .created = 5, .model = "m"};

TEST(OpenAiResponseTest, V3ToolCallsAreParsedWithIdsAndFinishAsToolCalls) {
  ParsedRequest request;
  ChoiceOutput choice(request, &RealTokenizer(), "r1", 0);
  const Piece a = choice.Push(Text("Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
                                   "<｜tool▁sep｜>get_weather\n```json\n{\"city\": "));
  EXPECT_EQ(a.text, "Let me check.");
  EXPECT_TRUE(a.tool_calls.empty());
  const Piece b = choice.Push(
      Last("\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", FinishReason::kStop));
  ASSERT_EQ(b.tool_calls.size(), 1u);
  EXPECT_EQ(b.tool_calls[0].id, "call_r1_0_0");
  EXPECT_EQ(b.tool_calls[0].call.name, "get_weather");
  EXPECT_EQ(b.tool_calls[0].call.arguments, "{\"city\": \"Paris\"}");
  EXPECT_EQ(choice.finish_reason(), "tool_calls");

  const json chunk = ChunkChoice(request, &RealTokenizer(), choice, b, false, true);
  EXPECT_EQ(chunk["delta"]["tool_calls"][0]["index"], 0);
  EXPECT_EQ(chunk["delta"]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(chunk["finish_reason"], "tool_calls");

  std::vector<ChoiceOutput> choices;
  choices.push_back(std::move(choice));
  const json full = FullResponse(request, &RealTokenizer(), kMeta, choices);
  const json& message = full["choices"][0]["message"];
  EXPECT_EQ(message["content"], "Let me check.");
  EXPECT_EQ(message["tool_calls"][0]["id"], "call_r1_0_0");
  EXPECT_FALSE(message["tool_calls"][0].contains("index"));
  EXPECT_FALSE(message.contains("reasoning_content"));
}

TEST(OpenAiResponseTest, R1ReasoningGoesToReasoningContent) {
  ParsedRequest request;
  request.chat_template = ChatTemplate::kR1;
  request.prompt_opened_think = true;
  ChoiceOutput choice(request, &RealTokenizer(), "r1", 0);
  const Piece a = choice.Push(Text("Thinking hard.</th"));
  EXPECT_EQ(a.reasoning, "Thinking hard.");
  const json first = ChunkChoice(request, &RealTokenizer(), choice, a, true, false);
  EXPECT_EQ(first["delta"]["role"], "assistant");
  EXPECT_EQ(first["delta"]["reasoning_content"], "Thinking hard.");
  EXPECT_FALSE(first["delta"].contains("content"));
  const Piece b = choice.Push(Last("ink>\n\nThe answer.", FinishReason::kLength));
  EXPECT_EQ(b.text, "\n\nThe answer.");
  EXPECT_EQ(choice.finish_reason(), "length");
  std::vector<ChoiceOutput> choices;
  choices.push_back(std::move(choice));
  const json full = FullResponse(request, &RealTokenizer(), kMeta, choices);
  EXPECT_EQ(full["choices"][0]["message"]["reasoning_content"], "Thinking hard.");
  EXPECT_EQ(full["choices"][0]["message"]["content"], "\n\nThe answer.");
}

TEST(OpenAiResponseTest, LogprobsCarryTokenTextAndBytes) {
  const Tokenizer& t = RealTokenizer();
  const std::vector<int32_t> ids = t.Encode(" cat é");
  ASSERT_GE(ids.size(), 2u);
  ParsedRequest request;
  request.endpoint = Endpoint::kCompletions;
  request.logprobs = true;
  request.top_logprobs = 1;
  ChoiceOutput choice(request, &t, "r1", 0);
  OutputDelta d = Last(t.Decode(ids), FinishReason::kStop);
  d.token_ids = ids;
  for (size_t i = 0; i < ids.size(); ++i) {
    d.logprobs.push_back(-0.5f * (i + 1));
    d.top_logprobs.push_back({{ids[i], -0.5f * (i + 1)}, {7, -9.0f}});  // cut to 1
  }
  const Piece piece = choice.Push(d);
  const json completion = ChunkChoice(request, &t, choice, piece, true, true);
  const json& lp = completion["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), ids.size());
  std::string joined;
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(lp["text_offset"][i], joined.size());
    joined += lp["tokens"][i].get<std::string>();
    EXPECT_EQ(lp["top_logprobs"][i].size(), 1u);
  }
  EXPECT_EQ(joined, " cat é");

  request.endpoint = Endpoint::kChat;
  ChoiceOutput chat(request, &t, "r1", 0);
  const json entry = ChunkChoice(request, &t, chat, chat.Push(d), true, true);
  const json& content = entry["logprobs"]["content"];
  ASSERT_EQ(content.size(), ids.size());
  std::string bytes;
  for (const json& token : content) {
    for (int b : token["bytes"]) bytes.push_back(static_cast<char>(b));
    EXPECT_EQ(token["top_logprobs"].size(), 1u);
    EXPECT_EQ(token["top_logprobs"][0]["token"], token["token"]);
  }
  EXPECT_EQ(bytes, " cat é");
}

TEST(OpenAiResponseTest, UsageCountsThePromptOnceAndEveryChoice) {
  ParsedRequest request;
  request.n = 2;
  std::vector<ChoiceOutput> choices;
  for (int i = 0; i < 2; ++i) {
    choices.emplace_back(request, &RealTokenizer(), "r1", i);
    choices.back().Push(Last("x", FinishReason::kStop));
  }
  const json usage = UsageJson(choices);
  EXPECT_EQ(usage["prompt_tokens"], 10);
  EXPECT_EQ(usage["completion_tokens"], 6);
  EXPECT_EQ(usage["total_tokens"], 16);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 4);
}

TEST(OpenAiResponseTest, EchoPutsThePromptFirstOnce) {
  ParsedRequest request;
  request.endpoint = Endpoint::kCompletions;
  request.echo_prefix = "Once";
  ChoiceOutput choice(request, nullptr, "r1", 0);
  EXPECT_EQ(choice.Push(Text(" upon")).text, "Once upon");
  EXPECT_EQ(choice.Push(Last(" a", FinishReason::kLength)).text, " a");
  EXPECT_EQ(choice.total().text, "Once upon a");
}

TEST(OpenAiErrorTest, StatusesMapToOpenAiErrors) {
  struct Case {
    absl::Status status;
    int http;
    std::string type;
    std::optional<std::string> param;
  };
  const std::vector<Case> cases = {
      {absl::InvalidArgumentError("sampling.top_p must be in (0, 1], got 2"), 400,
       "invalid_request_error", "top_p"},
      {absl::InvalidArgumentError("messages[3].content is unset"), 400, "invalid_request_error",
       "messages[3].content"},
      {absl::InvalidArgumentError("prompt (9 tokens) + sampling.max_tokens (9) = 18 exceeds"),
       400, "invalid_request_error", "max_tokens"},
      {InvalidParam("n", "n must be in [1, 16], got 0"), 400, "invalid_request_error", "n"},
      {absl::FailedPreconditionError("needs a tokenizer"), 400, "invalid_request_error",
       std::nullopt},
      {absl::UnauthenticatedError("the API key is not valid"), 401, "authentication_error",
       std::nullopt},
      {WithParam(absl::NotFoundError("no model"), "model"), 404, "invalid_request_error",
       "model"},
      {absl::ResourceExhaustedError("too many"), 429, "rate_limit_error", std::nullopt},
      {absl::UnavailableError("draining"), 503, "service_unavailable", std::nullopt},
      {absl::InternalError("boom"), 500, "server_error", std::nullopt},
  };
  for (const Case& c : cases) {
    const ApiError e = ToApiError(c.status);
    EXPECT_EQ(e.http_status, c.http) << c.status;
    EXPECT_EQ(e.type, c.type) << c.status;
    EXPECT_EQ(e.param, c.param) << c.status;
    const json j = json::parse(ErrorJson(e));
    EXPECT_EQ(j["error"]["message"], e.message);
    EXPECT_TRUE(j["error"].contains("param") && j["error"].contains("code"));
  }
  EXPECT_EQ(ToApiError(absl::InvalidArgumentError("sampling.top_p bad")).message, "top_p bad");
}

TEST(ServingDefaultsTest, ChatTemplateAndSamplingComeFromTheCheckpoint) {
  EXPECT_EQ(DetectChatTemplate("{{'<｜Assistant｜><think>\\n'}}"), ChatTemplate::kR1);
  EXPECT_EQ(DetectChatTemplate("{{'<｜Assistant｜>'}}"), ChatTemplate::kV3);
  auto s = SamplingFromGenerationConfig(R"({"temperature": 0.6, "top_p": 0.95, "top_k": 20})");
  ASSERT_TRUE(s.ok());
  EXPECT_FLOAT_EQ(s->temperature, 0.6f);
  EXPECT_FLOAT_EQ(s->top_p, 0.95f);
  EXPECT_EQ(s->top_k, 20);
  auto greedy = SamplingFromGenerationConfig(R"({"do_sample": false, "temperature": 0.6})");
  ASSERT_TRUE(greedy.ok());
  EXPECT_EQ(greedy->temperature, 0.0f);
  EXPECT_FALSE(SamplingFromGenerationConfig(R"({"top_p": "x"})").ok());
  EXPECT_FALSE(SamplingFromGenerationConfig(R"({"top_p": 7})").ok());
  EXPECT_FALSE(SamplingFromGenerationConfig("[").ok());

  TempDir dir;
  std::ofstream(dir.file("generation_config.json")) << R"({"temperature": 0.3})";
  std::ofstream(dir.file("tokenizer_config.json"))
      << R"({"chat_template": "{{'<｜Assistant｜><think>\\n'}}"})";
  auto d = ReadServingDefaults(dir.path().string() + "/", dir.path().string(), "auto", {});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->chat_template, ChatTemplate::kR1);
  EXPECT_FLOAT_EQ(d->sampling.temperature, 0.3f);
  EXPECT_EQ(d->served_names, (std::vector<std::string>{dir.path().filename().string()}));
  auto forced = ReadServingDefaults(dir.path().string(), dir.path().string(), "v3", {"a", "b"});
  ASSERT_TRUE(forced.ok());
  EXPECT_EQ(forced->chat_template, ChatTemplate::kV3);
  EXPECT_EQ(forced->served_names, (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace dsv3::server::openai::server_openai_response_test
