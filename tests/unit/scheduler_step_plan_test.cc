#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/scheduler/step_plan.h"

namespace dsv3::scheduler_step_plan_test {
namespace {

using ::testing::ElementsAre;

TEST(StepPlanTest, ToForwardBatchConcatenatesTokensAndPicksLastRowOfSampledEntries) {
  StepPlan plan;
  plan.sequences = {
      {.id = 7, .token_ids = {42}, .context_begin = 9, .block_table = {3, 1, 4}, .sample = true},
      {.id = 2, .token_ids = {1, 2, 3, 4}, .context_begin = 0, .block_table = {5}, .sample = false},
      {.id = 3, .token_ids = {5, 6}, .context_begin = 4, .block_table = {0, 2}, .sample = true},
  };
  EXPECT_EQ(plan.num_tokens(), 7);
  EXPECT_EQ(plan.num_samples(), 2);

  const ForwardBatch batch = plan.ToForwardBatch();
  EXPECT_THAT(batch.token_ids, ElementsAre(42, 1, 2, 3, 4, 5, 6));
  EXPECT_THAT(batch.logits_rows, ElementsAre(0, 6));
  ASSERT_EQ(batch.sequences.size(), 3u);
  struct Row {
    int32_t token_begin, num_tokens, context_begin;
    std::vector<int32_t> blocks;
  };
  const Row rows[] = {{0, 1, 9, {3, 1, 4}}, {1, 4, 0, {5}}, {5, 2, 4, {0, 2}}};
  for (size_t i = 0; i < 3; ++i) {
    const SequenceSlice& s = batch.sequences[i];
    EXPECT_EQ(s.token_begin, rows[i].token_begin) << i;
    EXPECT_EQ(s.num_tokens, rows[i].num_tokens) << i;
    EXPECT_EQ(s.context_begin, rows[i].context_begin) << i;
    EXPECT_EQ(s.block_table, rows[i].blocks) << i;
  }
}

TEST(StepPlanTest, EmptyPlanGivesEmptyBatch) {
  const ForwardBatch batch = StepPlan().ToForwardBatch();
  EXPECT_EQ(batch.num_tokens(), 0);
  EXPECT_TRUE(batch.sequences.empty());
  EXPECT_TRUE(batch.logits_rows.empty());
}

}  // namespace
}  // namespace dsv3::scheduler_step_plan_test
