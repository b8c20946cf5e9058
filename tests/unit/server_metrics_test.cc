#include <cmath>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics.h"

namespace dsv3::server::server_metrics_test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Every sample line (not a comment) of `text` that does not start with `prefix`.
std::vector<std::string> SamplesWithout(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#' && !line.starts_with(prefix)) out.push_back(line);
  }
  return out;
}

// The value of the sample `series` (name and labels) in `text`; NaN when absent.
double SampleValue(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return std::nan("");
  return std::stod(text.substr(at + series.size() + 2));
}

// Engine stats with something in every family, speculative decoding included.
EngineStats FullStats() {
  EngineStats s;
  s.queued_requests = 3;
  s.running_sequences = 5;
  s.kv_blocks_total = 100;
  s.kv_blocks_used = 25;
  s.prefix_cache_queries = 8;
  s.prefix_cache_hits = 2;
  s.generated_tokens = 1234;
  s.finished_requests[static_cast<int>(FinishReason::kStop)] = 7;
  s.finished_requests[static_cast<int>(FinishReason::kAbort)] = 2;
  s.requests = RequestHistograms(4096);
  RequestTimeline t(MonotonicTime{});
  t.Scheduled(MonotonicTime{} + std::chrono::milliseconds(3));
  t.TokensEmitted(MonotonicTime{} + std::chrono::milliseconds(40), s.requests);
  t.TokensEmitted(MonotonicTime{} + std::chrono::milliseconds(52), s.requests);
  t.Ended(MonotonicTime{} + std::chrono::milliseconds(52), 300, 2, s.requests);
  s.spec_proposed = {40, 40};
  s.spec_accepted = {30, 10};
  s.gpu_memory = GpuMemoryByUse{.weights = 90194313216,
                                .kv_cache = 39062500000,
                                .cuda_graphs = 314572800,
                                .workspace = 1,
                                .held = 129571386017,
                                .device_total = 150754820096};
  return s;
}

TEST(ServerMetrics, EverySampleCarriesTheModelName) {
  ServerMetrics m("deepseek-v3");
  m.RecordCall("Generate", grpc::StatusCode::OK);
  m.StreamStarted();
  const EngineStats s = FullStats();
  for (const EngineStats* engine : {static_cast<const EngineStats*>(nullptr), &s}) {
    const std::string out = m.Render(engine);
    EXPECT_THAT(SamplesWithout(out, "dsv3_"), ::testing::IsEmpty()) << out;
    std::vector<std::string> unnamed;
    for (const std::string& line : SamplesWithout(out, "#")) {
      if (line.find("{model_name=\"deepseek-v3\"") == std::string::npos) unnamed.push_back(line);
    }
    EXPECT_THAT(unnamed, ::testing::IsEmpty()) << out;
  }
}

TEST(ServerMetrics, ModelNameIsEscapedAsALabelValue) {
  const struct {
    std::string name;
    std::string label;
  } cases[] = {{"plain", "plain"},
               {"a\"b", "a\\\"b"},
               {"back\\slash", "back\\\\slash"},
               {"two\nlines", "two\\nlines"}};
  for (const auto& c : cases) {
    EXPECT_EQ(EscapeLabelValue(c.name), c.label);
    EXPECT_THAT(ServerMetrics(c.name).Render(nullptr),
                HasSubstr("dsv3_active_streams{model_name=\"" + c.label + "\"} 0\n"));
  }
}

TEST(ServerMetrics, CallsByMethodAndCode) {
  ServerMetrics m("m");
  m.RecordCall("Generate", grpc::StatusCode::OK);
  m.RecordCall("Generate", grpc::StatusCode::OK);
  m.RecordCall("Generate", grpc::StatusCode::INVALID_ARGUMENT);
  m.RecordCall("Chat", grpc::StatusCode::RESOURCE_EXHAUSTED);
  const std::string out = m.Render(nullptr);
  EXPECT_THAT(
      out, HasSubstr("dsv3_requests_total{model_name=\"m\",method=\"Generate\",code=\"OK\"} 2\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_requests_total{model_name=\"m\",method=\"Generate\",code="
                             "\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_requests_total{model_name=\"m\",method=\"Chat\",code="
                             "\"RESOURCE_EXHAUSTED\"} 1\n"));
  // While loading there is no engine: no engine metrics.
  EXPECT_THAT(out, Not(HasSubstr("dsv3_kv_blocks_used")));
  EXPECT_THAT(out, Not(HasSubstr("dsv3_time_to_first_token_seconds")));
}

TEST(ServerMetrics, EngineGaugesAndCounters) {
  ServerMetrics m("m");
  m.StreamStarted();
  const EngineStats stats = FullStats();
  const std::string out = m.Render(&stats);
  const struct {
    const char* sample;
  } want[] = {{"dsv3_active_streams{model_name=\"m\"} 1\n"},
              {"dsv3_queued_requests{model_name=\"m\"} 3\n"},
              {"dsv3_running_sequences{model_name=\"m\"} 5\n"},
              {"dsv3_kv_blocks_used{model_name=\"m\"} 25\n"},
              {"dsv3_kv_usage_ratio{model_name=\"m\"} 0.25\n"},
              {"dsv3_prefix_cache_hit_rate{model_name=\"m\"} 0.25\n"},
              {"dsv3_generated_tokens_total{model_name=\"m\"} 1234\n"},
              {"dsv3_finished_requests_total{model_name=\"m\",finished_reason=\"stop\"} 7\n"},
              {"dsv3_finished_requests_total{model_name=\"m\",finished_reason=\"length\"} 0\n"},
              {"dsv3_finished_requests_total{model_name=\"m\",finished_reason=\"abort\"} 2\n"},
              {"dsv3_finished_requests_total{model_name=\"m\",finished_reason=\"error\"} 0\n"}};
  for (const auto& w : want) EXPECT_THAT(out, HasSubstr(w.sample));
}

TEST(ServerMetrics, RequestHistogramsAreCumulativeWithSumAndCount) {
  ServerMetrics m("m");
  const EngineStats stats = FullStats();
  const std::string out = m.Render(&stats);
  // The request of FullStats: arrival 0, scheduled at 3 ms, tokens at 40 and 52 ms, 300 prompt
  // tokens.
  const struct {
    const char* name;
    const char* below;  // the largest bound under the sample (its bucket holds 0), if any
    const char* above;  // the smallest bound at or over it (its bucket holds 1)
    double sum;
  } cases[] = {
      {"dsv3_time_to_first_token_seconds", "0.02", "0.04", 0.040},  // bounds are inclusive
      {"dsv3_inter_token_latency_seconds", "0.01", "0.025", 0.012},
      {"dsv3_e2e_request_latency_seconds", "0.05", "0.1", 0.052},
      {"dsv3_request_queue_time_seconds", nullptr, "0.01", 0.003},
      {"dsv3_request_prefill_time_seconds", "0.025", "0.05", 0.037},
      {"dsv3_request_decode_time_seconds", "0.01", "0.025", 0.012},
      {"dsv3_request_inference_time_seconds", "0.025", "0.05", 0.049},
      {"dsv3_request_time_per_output_token_seconds", "0.01", "0.025", 0.012},
      {"dsv3_request_prompt_tokens", "200", "500", 300},
      {"dsv3_request_generation_tokens", "1", "2", 2},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string name = c.name;
    const std::string labels = "{model_name=\"m\"";
    EXPECT_THAT(out, HasSubstr("# TYPE " + name + " histogram\n"));
    if (c.below != nullptr) {
      EXPECT_THAT(out, HasSubstr(name + "_bucket" + labels + ",le=\"" + c.below + "\"} 0\n"));
    }
    EXPECT_THAT(out, HasSubstr(name + "_bucket" + labels + ",le=\"" + c.above + "\"} 1\n"));
    EXPECT_THAT(out, HasSubstr(name + "_bucket" + labels + ",le=\"+Inf\"} 1\n"));
    EXPECT_NEAR(SampleValue(out, name + "_sum" + labels + "}"), c.sum, 1e-12);
    EXPECT_THAT(out, HasSubstr(name + "_count" + labels + "} 1\n"));
  }
}

TEST(ServerMetrics, GpuMemoryByUseWithTheModelName) {
  const EngineStats stats = FullStats();
  const std::string out = ServerMetrics("m").Render(&stats);
  EXPECT_THAT(out, HasSubstr("# TYPE dsv3_gpu_memory_bytes gauge\n"));
  const struct {
    const char* use;
    double bytes;
  } want[] = {{"weights", 90194313216},
              {"kv_cache", 39062500000},
              {"cuda_graphs", 314572800},
              {"workspace", 1}};
  for (const auto& w : want) {
    EXPECT_EQ(SampleValue(out, std::string("dsv3_gpu_memory_bytes{model_name=\"m\",use=\"") +
                                   w.use + "\"}"),
              w.bytes)
        << w.use;
  }
}

TEST(ServerMetrics, NoGpuMemoryGaugeWithoutDeviceMemory) {
  // The CPU backend reports none: the family is absent rather than four zeros.
  EngineStats stats = FullStats();
  stats.gpu_memory.reset();
  EXPECT_THAT(ServerMetrics("m").Render(&stats), Not(HasSubstr("dsv3_gpu_memory_bytes")));
}

TEST(ServerMetrics, NoSpeculativeCountersWithoutSpeculativeDecoding) {
  EngineStats s;
  EXPECT_THAT(ServerMetrics("m").Render(&s), Not(HasSubstr("dsv3_spec_")));
}

TEST(ServerMetrics, SpeculativeDecodingByDraftPosition) {
  const EngineStats stats = FullStats();
  const std::string out = ServerMetrics("m").Render(&stats);
  EXPECT_THAT(out, HasSubstr("dsv3_spec_proposed_total{model_name=\"m\",position=\"0\"} 40\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_spec_accepted_total{model_name=\"m\",position=\"1\"} 10\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_spec_acceptance_rate{model_name=\"m\",position=\"0\"} 0.75\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_spec_acceptance_rate{model_name=\"m\",position=\"1\"} 0.25\n"));
}

}  // namespace
}  // namespace dsv3::server::server_metrics_test
