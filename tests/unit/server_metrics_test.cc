#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics.h"

namespace dsv3::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ServerMetrics, HistogramIsCumulative) {
  Histogram h({0.1, 1});
  h.Observe(0.05);
  h.Observe(0.1);  // upper bounds are inclusive
  h.Observe(0.5);
  h.Observe(7);
  std::string out;
  h.Render("x_seconds", "help", out);
  EXPECT_THAT(out, HasSubstr("# TYPE x_seconds histogram\n"));
  EXPECT_THAT(out, HasSubstr("x_seconds_bucket{le=\"0.1\"} 2\n"));
  EXPECT_THAT(out, HasSubstr("x_seconds_bucket{le=\"1\"} 3\n"));
  EXPECT_THAT(out, HasSubstr("x_seconds_bucket{le=\"+Inf\"} 4\n"));
  EXPECT_THAT(out, HasSubstr("x_seconds_sum 7.6500000000000004\n"));
  EXPECT_THAT(out, HasSubstr("x_seconds_count 4\n"));
}

TEST(ServerMetrics, CallsByMethodAndCode) {
  ServerMetrics m;
  m.RecordCall("Generate", grpc::StatusCode::OK);
  m.RecordCall("Generate", grpc::StatusCode::OK);
  m.RecordCall("Generate", grpc::StatusCode::INVALID_ARGUMENT);
  m.RecordCall("Chat", grpc::StatusCode::RESOURCE_EXHAUSTED);
  const std::string out = m.Render(nullptr);
  EXPECT_THAT(out, HasSubstr("dsv3_requests_total{method=\"Generate\",code=\"OK\"} 2\n"));
  EXPECT_THAT(out,
              HasSubstr("dsv3_requests_total{method=\"Generate\",code=\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(out,
              HasSubstr("dsv3_requests_total{method=\"Chat\",code=\"RESOURCE_EXHAUSTED\"} 1\n"));
  // While loading there is no engine: no engine gauges.
  EXPECT_THAT(out, Not(HasSubstr("dsv3_kv_blocks_used")));
}

TEST(ServerMetrics, EngineGauges) {
  ServerMetrics m;
  m.StreamStarted();
  m.RecordLatency(0.02, 0.004, 10);
  m.RecordLatency(0.5, 0, 1);  // one token: no time per output token
  EngineStats s;
  s.queued_requests = 3;
  s.running_sequences = 5;
  s.kv_blocks_total = 100;
  s.kv_blocks_used = 25;
  s.prefix_cache_queries = 8;
  s.prefix_cache_hits = 2;
  s.generated_tokens = 1234;
  const std::string out = m.Render(&s);
  EXPECT_THAT(out, HasSubstr("dsv3_active_streams 1\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_queued_requests 3\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_running_sequences 5\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_kv_blocks_used 25\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_kv_usage_ratio 0.25\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_prefix_cache_hit_rate 0.25\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_generated_tokens_total 1234\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_time_to_first_token_seconds_count 2\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_time_per_output_token_seconds_count 1\n"));
  EXPECT_THAT(out, Not(HasSubstr("dsv3_spec_")));  // no speculative decoding
}

TEST(ServerMetrics, SpeculativeDecodingByDraftPosition) {
  ServerMetrics m;
  EngineStats s;
  s.spec_proposed = {40, 40};
  s.spec_accepted = {30, 10};
  const std::string out = m.Render(&s);
  EXPECT_THAT(out, HasSubstr("dsv3_spec_proposed_total{position=\"0\"} 40\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_spec_accepted_total{position=\"1\"} 10\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_spec_acceptance_rate{position=\"0\"} 0.75\n"));
  EXPECT_THAT(out, HasSubstr("dsv3_spec_acceptance_rate{position=\"1\"} 0.25\n"));
}

}  // namespace
}  // namespace dsv3::server
