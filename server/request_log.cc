#include "server/request_log.h"

namespace dsv3::server {

void LogFinished(std::string_view request_id, std::string_view method, const OutputDelta& last) {
  LogEvent(spdlog::level::info, "finished",
           {{"request_id", request_id},
            {"method", method},
            {"finish_reason", FinishReasonName(last.finish_reason)},
            {"prompt_tokens", last.prompt_tokens},
            {"completion_tokens", last.completion_tokens},
            {"cached_tokens", last.cached_tokens},
            {"ttft_ms", last.time_to_first_token_s * 1e3},
            {"ms_per_token", last.time_per_output_token_s * 1e3}});
}

}  // namespace dsv3::server
