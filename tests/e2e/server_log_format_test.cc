// dsv3-server --log-format json (issue 17 part 5): every stderr line is one JSON object with a
// timestamp carrying its UTC offset, a level and a message, and a request's lines carry its
// request_id and method as keys; the text format's timestamps carry the offset too.
#include <regex>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_log_format_test {
namespace {

// 2026-12-01T23:45:01.123+00:00
const std::regex kTimestamp(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d)");

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(ServerLogFormatTest, JsonLinesParseAndARequestsLinesCarryItsId) {
  ServerProcess server({"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=64",
                        "--kv-block-size=16", "--log-format=json", "--log-level=debug"});
  ASSERT_TRUE(server.WaitServing()) << server.log();
  auto stub = server.Stub();
  v1::GenerateRequest ok = GreedyIds({1, 2, 3}, 4);
  ok.set_request_id("req \"quoted\" json-1");
  ASSERT_TRUE(ReadGenerate(*stub, ok).status.ok());
  v1::GenerateRequest bad = GreedyIds({1, 2, 3}, 4000);  // past the 1024-token KV cache
  bad.set_request_id("json-2");
  EXPECT_EQ(ReadGenerate(*stub, bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_EQ(server.Stop(), 0);

  int lines_of_1 = 0, finished_of_1 = 0, failed_of_2 = 0;
  const std::vector<std::string> lines = Lines(server.log());
  ASSERT_GT(lines.size(), 5u);
  for (const std::string& line : lines) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << "not a JSON object: " << line;
    ASSERT_TRUE(j.contains("timestamp") && j.contains("level") && j.contains("message")) << line;
    EXPECT_TRUE(std::regex_match(j["timestamp"].get<std::string>(), kTimestamp)) << line;
    const std::string id = j.value("request_id", "");
    if (id == "req \"quoted\" json-1") {
      ++lines_of_1;
      EXPECT_EQ(j.value("method", ""), "Generate") << line;
      if (j["message"] == "finished") {
        ++finished_of_1;
        EXPECT_EQ(j.value("completion_tokens", -1), 4) << line;
        EXPECT_EQ(j.value("finish_reason", ""), "length") << line;
      }
    }
    if (id == "json-2" && j["message"] == "failed") {
      ++failed_of_2;
      EXPECT_EQ(j.value("code", ""), "INVALID_ARGUMENT") << line;
      EXPECT_THAT(j.value("error", ""), ::testing::HasSubstr("--max-model-len")) << line;
    }
  }
  EXPECT_GE(lines_of_1, 2);  // submitted (debug) and finished
  EXPECT_EQ(finished_of_1, 1);
  EXPECT_EQ(failed_of_2, 1);
}

TEST(ServerLogFormatTest, TextTimestampsCarryTheUtcOffset) {
  ServerProcess server({"--model=" + FixturePath("tiny-fp8"), "--num-kv-blocks=64",
                        "--kv-block-size=16"});
  ASSERT_TRUE(server.WaitServing()) << server.log();
  ASSERT_EQ(server.Stop(), 0);
  const std::vector<std::string> lines = Lines(server.log());
  ASSERT_FALSE(lines.empty());
  for (const std::string& line : lines) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(line, m, kTimestamp) && m.position(0) == 0) << line;
  }
}

}  // namespace
}  // namespace dsv3::testing::server_log_format_test
