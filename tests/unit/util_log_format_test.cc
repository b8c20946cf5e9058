// The log line formats (engine/util/log_format.h): every JSON line parses back with its
// timestamp (UTC offset), level, message and fields, whatever quotes, newlines or control
// characters the message and values hold; text lines carry the offset and keep fields on one
// line.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "engine/util/log_format.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/ostream_sink.h"

namespace dsv3::util_log_format_test {
namespace {

using ::testing::HasSubstr;

const std::regex kTimestamp(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d)");

// Makes a default logger writing to `out` in `format` for the test's lifetime.
class CapturedLog {
 public:
  explicit CapturedLog(LogFormat format) : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("test", sink);
    logger->set_formatter(MakeLogFormatter(format));
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::vector<std::string> Lines() const {
    std::vector<std::string> lines;
    std::istringstream in(out_.str());
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

TEST(LogFormatTest, JsonLinesParseBackWithEveryField) {
  const std::string nasty = "a \"quoted\" word,\na newline, a tab\t, a bell \x07, \\ and \xff";
  const struct {
    std::function<void()> log;
    std::string level, message;
    nlohmann::json fields;  // expected extra keys
  } cases[] = {
      {[] { spdlog::info("plain message"); }, "info", "plain message", nlohmann::json::object()},
      {[&] { spdlog::warn("{}", nasty); }, "warning", "", nlohmann::json::object()},
      {[] {
         LogEvent(spdlog::level::info, "finished",
                  {{"request_id", "r-1"}, {"method", "Generate"}, {"tokens", 16},
                   {"ttft_ms", 1.5}, {"cached", true}});
       },
       "info", "finished",
       {{"request_id", "r-1"}, {"method", "Generate"}, {"tokens", 16}, {"ttft_ms", 1.5},
        {"cached", true}}},
      {[&] {
         LogEvent(spdlog::level::err, nasty, {{"request_id", nasty}, {"message", "dropped"}});
       },
       "error", "", nlohmann::json::object()},
      {[] { LogEvent(spdlog::level::debug, "debug line", {{"method", "Chat"}}); }, "debug",
       "debug line", {{"method", "Chat"}}},
  };
  for (const auto& c : cases) {
    CapturedLog log(LogFormat::kJson);
    c.log();
    const auto lines = log.Lines();
    ASSERT_EQ(lines.size(), 1u);
    const auto j = nlohmann::json::parse(lines[0], nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << lines[0];
    EXPECT_TRUE(std::regex_match(j["timestamp"].get<std::string>(), kTimestamp)) << lines[0];
    EXPECT_EQ(j["level"], c.level);
    if (!c.message.empty()) {
      EXPECT_EQ(j["message"], c.message);
    }
    for (const auto& [key, value] : c.fields.items()) EXPECT_EQ(j[key], value) << key;
    EXPECT_EQ(j.size(), 3 + c.fields.size() + (j.contains("request_id") && c.fields.empty()))
        << lines[0];
  }
}

TEST(LogFormatTest, JsonEscapesQuotesNewlinesAndControlCharacters) {
  CapturedLog log(LogFormat::kJson);
  const std::string text = "say \"hi\"\nthen\tbell\x07 end";
  LogEvent(spdlog::level::info, text, {{"request_id", text}});
  const auto lines = log.Lines();
  ASSERT_EQ(lines.size(), 1u);  // the newline did not split the line
  EXPECT_THAT(lines[0], HasSubstr(R"(say \"hi\"\nthen\tbell\u0007 end)"));
  const auto j = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(j["message"], text);
  EXPECT_EQ(j["request_id"], text);
}

TEST(LogFormatTest, AMessageThatLooksLikeAnEventButIsNotStaysItself) {
  CapturedLog log(LogFormat::kJson);
  spdlog::info("{}", "\x1e{not json");
  const auto j = nlohmann::json::parse(log.Lines().at(0));
  EXPECT_EQ(j["message"], "\x1e{not json");
}

TEST(LogFormatTest, TextLinesHaveTheOffsetAndQuoteValuesThatNeedIt) {
  CapturedLog log(LogFormat::kText);
  LogEvent(spdlog::level::info, "finished",
           {{"request_id", "r 1"}, {"method", "Generate"}, {"tokens", 16}, {"note", "a\nb"}});
  const auto lines = log.Lines();
  ASSERT_EQ(lines.size(), 1u);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(lines[0], m, kTimestamp));
  EXPECT_EQ(m.position(0), 0);
  EXPECT_THAT(lines[0], HasSubstr(" info finished request_id=\"r 1\" method=Generate tokens=16 "
                                  "note=\"a\\nb\""));
}

TEST(LogFormatTest, TimestampHasTheLocalOffset) {
  const auto epoch = std::chrono::system_clock::from_time_t(0) + std::chrono::milliseconds(5);
  const std::string s = Iso8601WithOffset(epoch);
  EXPECT_TRUE(std::regex_match(s, kTimestamp)) << s;
  EXPECT_THAT(s, HasSubstr(".005"));
}

TEST(LogFormatTest, ParseLogFormatNamesTheFlag) {
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_THAT(ParseLogFormat("xml").status().message(), HasSubstr("--log-format"));
}

}  // namespace
}  // namespace dsv3::util_log_format_test
