#include "engine/util/log_format.h"

#include <algorithm>
#include <chrono>
#include <ctime>

#include "absl/strings/str_format.h"
#include "spdlog/sinks/stdout_color_sinks.h"

namespace dsv3 {
namespace {

// Starts a LogEvent payload; never the first byte of an ordinary message (it is a control
// character that request ids and messages do not carry, and a payload that does not parse is
// logged as the plain text it is anyway).
constexpr char kEventMarker = '\x1e';

bool IsOwnKey(std::string_view key) {
  return key == "timestamp" || key == "level" || key == "message";
}

std::string Dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// A text-format value: numbers and plain words as they are, anything else JSON-quoted (so that
// spaces, quotes and newlines cannot split or forge a line).
std::string TextValue(const nlohmann::ordered_json& v) {
  if (!v.is_string()) return Dump(v);
  const std::string& s = v.get_ref<const std::string&>();
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\';
  });
  return plain ? s : Dump(v);
}

class LogLineFormatter final : public spdlog::formatter {
 public:
  explicit LogLineFormatter(LogFormat format) : format_(format) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    nlohmann::ordered_json event;
    if (!payload.empty() && payload.front() == kEventMarker) {
      event = nlohmann::ordered_json::parse(payload.substr(1), nullptr, /*allow_exceptions=*/false);
    }
    std::string_view message = payload;
    if (event.is_object() && event.contains("message") && event["message"].is_string()) {
      message = event["message"].get_ref<const std::string&>();
    } else {
      event = nlohmann::ordered_json::object();
    }
    const std::string time = Iso8601WithOffset(msg.time);
    const spdlog::string_view_t level = spdlog::level::to_string_view(msg.level);
    std::string line;
    if (format_ == LogFormat::kJson) {
      nlohmann::ordered_json out;
      out["timestamp"] = time;
      out["level"] = std::string_view(level.data(), level.size());
      out["message"] = message;
      for (const auto& [key, value] : event.items()) {
        if (!IsOwnKey(key)) out[key] = value;
      }
      line = Dump(out);
    } else {
      line = time + " ";
      msg.color_range_start = line.size();
      line.append(level.data(), level.size());
      msg.color_range_end = line.size();
      line.append(" ").append(message);
      for (const auto& [key, value] : event.items()) {
        if (!IsOwnKey(key)) line.append(" ").append(key).append("=").append(TextValue(value));
      }
    }
    line.push_back('\n');
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<LogLineFormatter>(format_);
  }

 private:
  const LogFormat format_;
};

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrFormat("--log-format must be text or json, not '%s'", name));
}

std::unique_ptr<spdlog::formatter> MakeLogFormatter(LogFormat format) {
  return std::make_unique<LogLineFormatter>(format);
}

void InstallStderrLogger(const std::string& name, LogFormat format,
                         spdlog::level::level_enum level) {
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_formatter(MakeLogFormatter(format));
  logger->set_level(level);
  spdlog::set_default_logger(std::move(logger));
}

void LogEvent(spdlog::level::level_enum level, std::string_view message,
              std::initializer_list<LogField> fields) {
  const std::shared_ptr<spdlog::logger> logger = spdlog::default_logger();
  if (!logger->should_log(level)) return;
  nlohmann::ordered_json event;
  event["message"] = message;
  for (const auto& [key, value] : fields) {
    if (!IsOwnKey(key)) event[key] = value;
  }
  const std::string payload = kEventMarker + Dump(event);
  logger->log(level, spdlog::string_view_t(payload.data(), payload.size()));
}

std::string Iso8601WithOffset(std::chrono::system_clock::time_point time) {
  const auto since_epoch = time.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count());
  const std::time_t t = static_cast<std::time_t>(seconds.count());
  std::tm local{};
  localtime_r(&t, &local);
  const long offset_min = local.tm_gmtoff / 60;
  const long abs_min = offset_min < 0 ? -offset_min : offset_min;
  return absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02d.%03d%c%02d:%02d", local.tm_year + 1900,
                         local.tm_mon + 1, local.tm_mday, local.tm_hour, local.tm_min,
                         local.tm_sec, millis, offset_min < 0 ? '-' : '+', abs_min / 60,
                         abs_min % 60);
}

}  // namespace dsv3
