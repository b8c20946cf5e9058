// The OpenAI-compatible HTTP API (--http-listen) over plain HTTP (cpp-httplib's client) on the
// demo model: health, models, both endpoints streamed (SSE ending in [DONE]) and whole, errors in
// OpenAI's shape with their HTTP status, API keys, x-request-id, a client that disconnects
// (aborted, KV blocks freed), and draining (503).
#include <atomic>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_http_test {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr char kKey[] = "http-test-key";

httplib::Headers Auth() { return {{"Authorization", std::string("Bearer ") + kKey}}; }

// The JSON objects of an SSE body, and whether it ended with "data: [DONE]".
struct Events {
  std::vector<json> data;
  bool done = false;
};
Events ParseSse(const std::string& body) {
  Events e;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("data: ")) continue;
    const std::string payload = line.substr(6);
    if (payload == "[DONE]") {
      e.done = true;
    } else {
      e.data.push_back(json::parse(payload));
    }
  }
  return e;
}

class ServerHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    keys_ = new TempDir;
    std::ofstream(keys_->file("keys")) << kKey << "\n";
    // The tests read KV and abort counts from /metrics, which API keys would close.
    server_ = new ServerProcess({"--api-key-file=" + keys_->file("keys"), "--metrics-auth=none",
                                 "--num-kv-blocks=512", "--kv-block-size=16",
                                 "--served-model-name", "demo", "other"},
                                /*http=*/true);
    ASSERT_TRUE(server_->WaitServing(std::chrono::seconds(300))) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete keys_;
  }
  static httplib::Client Client() {
    httplib::Client c("127.0.0.1", server_->http_port());
    c.set_read_timeout(60);
    return c;
  }
  static httplib::Result Post(const std::string& path, const json& body,
                              httplib::Headers headers = Auth()) {
    return Client().Post(path.c_str(), headers, body.dump(), "application/json");
  }
  static json Chat(int max_tokens) {
    return {{"model", "demo"},
            {"messages", {{{"role", "user"}, {"content", "Tell me about dogs."}}}},
            {"max_tokens", max_tokens}};
  }
  static double AbortedRequests() {
    return server_->Metric("dsv3_finished_requests_total", "finished_reason=\"abort\"");
  }
  static ServerProcess* server_;
  static TempDir* keys_;
};
ServerProcess* ServerHttpTest::server_ = nullptr;
TempDir* ServerHttpTest::keys_ = nullptr;

TEST_F(ServerHttpTest, HealthNeedsNoKeyAndModelsListsTheServedNames) {
  auto health = Client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto models = Client().Get("/v1/models", Auth());
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200) << models->body;
  const json j = json::parse(models->body);
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["id"], "demo");
  EXPECT_EQ(j["data"][1]["id"], "other");
}

TEST_F(ServerHttpTest, ChatStreamEndsWithDoneAndMatchesTheWholeAnswerAtTemperatureZero) {
  json body = Chat(32);
  body["temperature"] = 0;
  auto whole = Post("/v1/chat/completions", body);
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const json answer = json::parse(whole->body);
  EXPECT_EQ(answer["model"], "demo");

  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto streamed = Post("/v1/chat/completions", body);
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200);
  EXPECT_THAT(streamed->get_header_value("Content-Type"), HasSubstr("text/event-stream"));
  const Events events = ParseSse(streamed->body);
  ASSERT_TRUE(events.done);
  ASSERT_GE(events.data.size(), 2u);
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 1 < events.data.size(); ++i) {
    const json& choice = events.data[i]["choices"][0];
    if (i == 0) {
      EXPECT_EQ(choice["delta"]["role"], "assistant");
    }
    text += choice["delta"].value("content", "");
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    EXPECT_TRUE(events.data[i]["usage"].is_null());
  }
  EXPECT_EQ(text, answer["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, answer["choices"][0]["finish_reason"]);
  const json& usage = events.data.back()["usage"];
  EXPECT_TRUE(events.data.back()["choices"].empty());
  EXPECT_EQ(usage["completion_tokens"], answer["usage"]["completion_tokens"]);
}

TEST_F(ServerHttpTest, CompletionsStreamAndStopString) {
  const json body = {{"prompt", "Once upon a time"}, {"max_tokens", 40}, {"temperature", 0},
                     {"ignore_eos", true}};
  auto whole = Post("/v1/completions", body);
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const std::string text = json::parse(whole->body)["choices"][0]["text"];
  ASSERT_GE(text.size(), 8u);
  json streamed_body = body;
  streamed_body["stream"] = true;
  auto streamed = Post("/v1/completions", streamed_body);
  ASSERT_TRUE(streamed);
  const Events events = ParseSse(streamed->body);
  ASSERT_TRUE(events.done);
  std::string joined;
  for (const json& e : events.data) joined += e["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(joined, text);

  // A stop string cut from the middle of the greedy answer ends it there.
  json stopped = body;
  stopped["stop"] = text.substr(4, 3);
  auto cut = Post("/v1/completions", stopped);
  ASSERT_TRUE(cut);
  const json j = json::parse(cut->body);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["text"], text.substr(0, text.find(text.substr(4, 3))));
}

TEST_F(ServerHttpTest, ErrorsHaveOpenAiShapeAndStatus) {
  struct Case {
    json body;
    int status;
    std::string param;
  };
  const std::vector<Case> cases = {
      {{{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"top_p", 2}}, 400, "top_p"},
      {{{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"frobnicate", 1}}, 400,
       "frobnicate"},
      {{{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}, 400, "messages[0].role"},
      {{{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"n", 0}}, 400, "n"},
      {{{"messages", {{{"role", "user"}, {"content", "x"}}}},
        {"response_format", {{"type", "json_schema"}}}},
       400, "response_format"},
      {{{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"model", "gpt-9"}}, 404, "model"},
  };
  for (const Case& c : cases) {
    auto res = Post("/v1/chat/completions", c.body);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, c.status) << c.body.dump() << " -> " << res->body;
    const json e = json::parse(res->body)["error"];
    EXPECT_EQ(e["param"], c.param) << res->body;
    EXPECT_TRUE(e["message"].is_string());
    EXPECT_TRUE(e["type"].is_string());
  }
  auto not_json = Client().Post("/v1/chat/completions", Auth(), "{", "application/json");
  ASSERT_TRUE(not_json);
  EXPECT_EQ(not_json->status, 400);
  auto no_key = Post("/v1/chat/completions", Chat(4), {});
  ASSERT_TRUE(no_key);
  EXPECT_EQ(no_key->status, 401);
  EXPECT_EQ(json::parse(no_key->body)["error"]["type"], "authentication_error");
  auto wrong_key = Post("/v1/chat/completions", Chat(4), {{"Authorization", "Bearer nope"}});
  ASSERT_TRUE(wrong_key);
  EXPECT_EQ(wrong_key->status, 401);
  auto unknown = Client().Get("/v2/nothing", Auth());
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_TRUE(json::parse(unknown->body).contains("error"));
}

TEST_F(ServerHttpTest, RequestIdIsEchoed) {
  httplib::Headers headers = Auth();
  headers.emplace("x-request-id", "my-request-7");
  auto res = Post("/v1/chat/completions", Chat(4), headers);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("x-request-id"), "my-request-7");
  EXPECT_EQ(json::parse(res->body)["id"], "chatcmpl-my-request-7");
  headers = Auth();
  headers.emplace("x-request-id", "bad\x1b[31m");
  auto bad = Post("/v1/chat/completions", Chat(4), headers);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["param"], "x-request-id");
}

TEST_F(ServerHttpTest, TwoChoicesWithASeedDifferAndRepeat) {
  json body = Chat(16);
  body["n"] = 2;
  body["seed"] = 11;
  body["ignore_eos"] = true;
  auto a = Post("/v1/chat/completions", body);
  auto b = Post("/v1/chat/completions", body);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->status, 200) << a->body;
  const json ja = json::parse(a->body), jb = json::parse(b->body);
  ASSERT_EQ(ja["choices"].size(), 2u);
  EXPECT_EQ(ja["choices"][0]["message"], jb["choices"][0]["message"]);
  EXPECT_EQ(ja["choices"][1]["message"], jb["choices"][1]["message"]);
  EXPECT_NE(ja["choices"][0]["message"], ja["choices"][1]["message"]);
  EXPECT_EQ(ja["usage"]["completion_tokens"], 32);
}

// Waits until no KV block is held by a sequence (an aborted request frees its blocks at the
// engine's next step).
bool KvBlocksFreed(ServerProcess& server) {
  for (int i = 0; i < 200; ++i) {
    if (server.Metric("dsv3_kv_blocks_used") == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST_F(ServerHttpTest, ClientThatDisconnectsMidStreamIsAbortedAndItsBlocksFreed) {
  json body = Chat(0);
  body.erase("max_tokens");  // the context left: longer than the test waits
  body["ignore_eos"] = true;
  body["stream"] = true;
  int chunks = 0;
  auto client = Client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.headers = Auth();
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 5; };
  client.send(req);  // returns once the receiver said stop and the connection closed
  EXPECT_GE(chunks, 5);
  EXPECT_TRUE(KvBlocksFreed(*server_)) << server_->Metrics();
  for (int i = 0; i < 100 && server_->log().find("client disconnected") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_THAT(server_->log(), HasSubstr("the client disconnected, aborted in the engine"));
}

TEST_F(ServerHttpTest, ClientThatDisconnectsWhileWaitingForAWholeAnswerIsAborted) {
  json body = Chat(0);
  body.erase("max_tokens");
  body["ignore_eos"] = true;
  const double aborted_before = AbortedRequests();
  // After a while with no answer the server probes with whitespace; the client leaves then.
  std::string received;
  auto client = Client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.headers = Auth();
  req.body = body.dump();
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    received.append(data, n);
    return false;
  };
  client.send(req);
  EXPECT_EQ(received.find('}'), std::string::npos) << "the whole answer came: " << received;
  EXPECT_TRUE(KvBlocksFreed(*server_)) << server_->Metrics();
  for (int i = 0; i < 100 && AbortedRequests() <= aborted_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GT(AbortedRequests(), aborted_before);
}

TEST(ServerHttpDrainTest, HealthIs503WhileDrainingAndNewRequestsGet503) {
  ServerProcess server({"--grace-period-s=2"}, /*http=*/true);
  ASSERT_TRUE(server.WaitServing(std::chrono::seconds(300))) << server.log();
  httplib::Client client("127.0.0.1", server.http_port());
  client.set_read_timeout(30);
  std::atomic<bool> streaming{false};
  std::string stream_body;
  std::thread stream([&] {
    httplib::Client c("127.0.0.1", server.http_port());
    c.set_read_timeout(30);
    const json body = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                       {"ignore_eos", true}, {"stream", true}};
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.body = body.dump();
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      stream_body.append(data, n);
      streaming = true;
      return true;
    };
    c.send(req);
  });
  while (!streaming) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  server.SendSignal(SIGTERM);
  bool saw_503 = false;
  for (int i = 0; i < 100 && !saw_503; ++i) {
    auto health = client.Get("/health");
    saw_503 = health && health->status == 503;
    if (!saw_503) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(saw_503);
  auto late = client.Post("/v1/completions", R"({"prompt": "Hi", "max_tokens": 2})",
                          "application/json");
  if (late) {  // the listener may already be closed
    EXPECT_EQ(late->status, 503);
    EXPECT_THAT(late->body, HasSubstr("shutting down"));
  }
  stream.join();
  // The grace period ends the stream with an error event (OpenAI's SDKs raise it).
  EXPECT_THAT(stream_body, HasSubstr("\"error\""));
  EXPECT_THAT(stream_body, HasSubstr("data: [DONE]"));
  EXPECT_EQ(server.WaitExit(std::chrono::seconds(20)), 0) << server.log();
}

}  // namespace
}  // namespace dsv3::testing::server_http_test
