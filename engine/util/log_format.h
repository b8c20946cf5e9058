// Log lines of the daemons and tools on stderr, through spdlog, in one of two formats
// (--log-format):
//   text  2026-12-01T23:45:01.123+00:00 info finished request_id=r-1 method=Generate tokens=16
//   json  {"timestamp":"2026-12-01T23:45:01.123+00:00","level":"info","message":"finished",
//          "request_id":"r-1","method":"Generate","tokens":16}      (one object per line)
// Timestamps are local time with their UTC offset (ISO 8601, milliseconds).
//
// Fields beyond the message come from LogEvent: it hands spdlog one payload, a marker byte and a
// JSON object {"message": ..., fields...}, which the formatter reads back; any other spdlog call
// logs a message with no fields. So the formatter needs no state besides the line it formats,
// and the JSON escaping of messages and values (quotes, newlines, control characters, invalid
// UTF-8, replaced) is nlohmann-json's.
#pragma once

#include <chrono>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "spdlog/formatter.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

enum class LogFormat { kText, kJson };

// "text" or "json"; InvalidArgument naming --log-format otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(std::string_view name);

// The formatter of `format` (a spdlog::formatter: set it on a logger or a sink).
std::unique_ptr<spdlog::formatter> MakeLogFormatter(LogFormat format);

// Makes a stderr logger named `name` the default one, in `format` at `level` (colours in the
// text format on a terminal).
void InstallStderrLogger(const std::string& name, LogFormat format,
                         spdlog::level::level_enum level);

// One field of a log event: a key and a JSON value (string, number, bool).
using LogField = std::pair<std::string, nlohmann::json>;

// Logs `message` with `fields` through the default logger: request-scoped lines pass
// {"request_id", id}, {"method", method} and what else they report. Keys "timestamp", "level"
// and "message" are the formatter's own; a field of one of those names is dropped.
void LogEvent(spdlog::level::level_enum level, std::string_view message,
              std::initializer_list<LogField> fields);

// The time as the formatters write it: local time with the UTC offset, milliseconds,
// "2026-12-01T23:45:01.123+00:00".
std::string Iso8601WithOffset(std::chrono::system_clock::time_point time);

}  // namespace dsv3
