// RequestStream, the engine-to-front-end queue of one request: TakeAll merges what is queued
// (how the gRPC reactor catches up after a slow write), in order and never past the final delta;
// a full queue merges into its last delta instead of growing.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace dsv3::engine_request_stream_test {
namespace {

OutputDelta Token(int32_t id, FinishReason reason = FinishReason::kNone) {
  OutputDelta d;
  d.token_ids = {id};
  d.text = "t" + std::to_string(id);
  d.logprobs = {-0.5f * static_cast<float>(id)};
  d.finish_reason = reason;
  if (reason != FinishReason::kNone) d.completion_tokens = id;
  return d;
}

TEST(RequestStreamTest, TakeAllMergesWhatIsQueuedInOrder) {
  struct Case {
    std::string name;
    int pushed;         // tokens 1..pushed
    int final_at;       // the token that carries a finish reason (0: none)
    std::vector<int32_t> first_take;
    bool closed_after;  // a second TakeAll returns nothing even if more was pushed
  };
  const std::vector<Case> cases = {
      {"nothing queued", 0, 0, {}, false},
      {"one delta", 1, 0, {1}, false},
      {"several deltas", 4, 0, {1, 2, 3, 4}, false},
      {"up to the final one", 3, 3, {1, 2, 3}, true},
  };
  for (const Case& c : cases) {
    RequestStream stream(7, /*capacity=*/64);
    for (int i = 1; i <= c.pushed; ++i) {
      stream.Push(Token(i, i == c.final_at ? FinishReason::kStop : FinishReason::kNone));
    }
    std::optional<OutputDelta> got = stream.TakeAll();
    if (c.first_take.empty()) {
      EXPECT_FALSE(got.has_value()) << c.name;
      continue;
    }
    ASSERT_TRUE(got.has_value()) << c.name;
    EXPECT_EQ(got->token_ids, c.first_take) << c.name;
    std::string text;
    std::vector<float> logprobs;
    for (int32_t id : c.first_take) {
      text += "t" + std::to_string(id);
      logprobs.push_back(-0.5f * static_cast<float>(id));
    }
    EXPECT_EQ(got->text, text) << c.name;
    EXPECT_EQ(got->logprobs, logprobs) << c.name;
    EXPECT_EQ(got->finished(), c.final_at != 0) << c.name;
    if (c.final_at != 0) {
      EXPECT_EQ(got->completion_tokens, c.final_at) << c.name;
    }
    stream.Push(Token(99));
    EXPECT_EQ(stream.TakeAll().has_value(), !c.closed_after) << c.name;
  }
}

TEST(RequestStreamTest, TakeAllKeepsTheFinalDeltasError) {
  RequestStream stream(1, 64);
  stream.Push(Token(1));
  OutputDelta failed = Token(2, FinishReason::kError);
  failed.error = "rank 1 died";
  failed.error_code = absl::StatusCode::kUnavailable;
  stream.Push(failed);
  std::optional<OutputDelta> got = stream.TakeAll();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->token_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(got->error, "rank 1 died");
  EXPECT_EQ(got->error_code, absl::StatusCode::kUnavailable);
}

TEST(RequestStreamTest, AFullQueueMergesIntoItsLastDelta) {
  RequestStream stream(1, /*capacity=*/2);
  for (int i = 1; i <= 5; ++i) stream.Push(Token(i));
  std::optional<OutputDelta> first = stream.TryNext(), second = stream.TryNext();
  ASSERT_TRUE(first.has_value() && second.has_value());
  EXPECT_EQ(first->token_ids, (std::vector<int32_t>{1}));
  EXPECT_EQ(second->token_ids, (std::vector<int32_t>{2, 3, 4, 5}));
  EXPECT_FALSE(stream.TryNext().has_value());
}

}  // namespace
}  // namespace dsv3::engine_request_stream_test
