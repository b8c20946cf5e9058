// Scheduler with speculative decoding: decode entries get draft slots (bounded by K, the budget,
// the blocks and the remaining max_new_tokens), CommitStep keeps only the accepted positions and
// frees the blocks rejected drafts took, and the prefix cache sees committed tokens only.
// Step tables as in scheduler_step_test.cc, plus how many drafts each entry accepts.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/scheduler/scheduler.h"

namespace dsv3::scheduler_speculative_test {
namespace {

// "id:new_tokens@context_begin[blocks]" plus "+d" for d drafts and "s" when it samples.
std::string Describe(const ScheduledSequence& s) {
  return absl::StrCat(s.id, ":", s.num_new_tokens(), "@", s.context_begin, "[",
                      absl::StrJoin(s.block_table, ","), "]",
                      s.num_drafts > 0 ? absl::StrCat("+", s.num_drafts) : "", s.sample ? "s" : "");
}

struct Step {
  std::vector<std::string> entries;
  std::vector<int32_t> accepted;  // per sampling entry: drafts accepted (emits accepted + 1)
  std::vector<SequenceId> finish = {};
  int32_t used_blocks = -1;  // pool blocks in use after the step, when >= 0
};

class SchedulerSpeculativeTest : public ::testing::Test {
 protected:
  void Init(int32_t num_blocks, int32_t block_size, int32_t max_batched_tokens, int32_t k) {
    pool_ = std::make_unique<BlockPool>(num_blocks, block_size, BlockHasher({1, 2, 3, 4}));
    SchedulerConfig config;
    config.max_batched_tokens = max_batched_tokens;
    config.max_running_seqs = 4;
    config.speculative_tokens = k;
    scheduler_ = std::make_unique<Scheduler>(config, *pool_);
  }

  void Add(SequenceId id, int32_t prompt_length, int32_t max_new_tokens) {
    std::vector<int32_t> prompt(prompt_length);
    std::iota(prompt.begin(), prompt.end(), static_cast<int32_t>(id) * 100);
    ASSERT_TRUE(scheduler_->AddSequence(id, prompt, max_new_tokens).ok());
  }

  void RunSteps(const std::vector<Step>& steps) {
    for (size_t i = 0; i < steps.size(); ++i) {
      SCOPED_TRACE(absl::StrCat("step ", i + 1));
      const Step& step = steps[i];
      const StepPlan plan = scheduler_->Schedule();
      std::vector<std::string> got;
      for (const ScheduledSequence& s : plan.sequences) got.push_back(Describe(s));
      EXPECT_EQ(got, step.entries);
      std::vector<std::vector<int32_t>> emitted;
      size_t next = 0;
      for (const ScheduledSequence& s : plan.sequences) {
        if (!s.sample) continue;
        const int32_t accepted = next < step.accepted.size() ? step.accepted[next] : 0;
        ++next;
        std::vector<int32_t> tokens;
        for (int32_t j = 0; j <= accepted; ++j) tokens.push_back(7000 + j);
        emitted.push_back(tokens);
      }
      scheduler_->CommitStep(plan, emitted);
      for (SequenceId id : step.finish) EXPECT_TRUE(scheduler_->Finish(id).ok()) << id;
      EXPECT_TRUE(scheduler_->CheckInvariants().ok()) << scheduler_->CheckInvariants();
      if (step.used_blocks >= 0) {
        EXPECT_EQ(pool_->stats().num_used, step.used_blocks);
      }
    }
  }

  std::unique_ptr<BlockPool> pool_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerSpeculativeTest, RejectedDraftsGiveTheirBlocksBack) {
  Init(/*num_blocks=*/8, /*block_size=*/4, /*max_batched_tokens=*/16, /*k=*/3);
  Add(1, 3, 20);
  RunSteps({
      // Prefill; the sampled token is position 3.
      {{"1:3@0[0]s"}, {0}, {}, 1},
      // Decode of position 3 with 3 drafts (positions 4..6): a second block; none accepted, so
      // the sequence has 5 tokens and block 1 is kept for position 4 only.
      {{"1:4@3[0,1]+3s"}, {0}, {}, 2},
      // All 3 accepted: 4 tokens more (9 in all), positions 4..7 computed in blocks 0 and 1.
      {{"1:4@4[0,1]+3s"}, {3}, {}, 2},
      // 1 accepted: 11 tokens; the third block (positions 8..11) stays.
      {{"1:4@8[0,1,2]+3s"}, {1}, {1}, 0},
  });
}

TEST_F(SchedulerSpeculativeTest, DraftsStopAtMaxNewTokens) {
  Init(8, 4, 16, 3);
  Add(1, 3, 4);
  RunSteps({
      {{"1:3@0[0]s"}, {0}},
      // 1 output so far, 3 more allowed: 2 drafts at most (they and one more token); all
      // accepted make 4 outputs, and the caller finishes it.
      {{"1:3@3[0,1]+2s"}, {2}, {1}, 0},
  });
}

TEST_F(SchedulerSpeculativeTest, DraftsYieldToTheBudgetAndTheDecodeReserve) {
  Init(16, 4, /*max_batched_tokens=*/5, 3);
  Add(1, 2, 20);
  Add(2, 2, 20);
  RunSteps({
      {{"1:2@0[0]s", "2:2@0[1]s"}, {0, 0}},
      // 5 tokens: sequence 1 takes 1 + 3 drafts, and 1 stays for sequence 2's decode.
      {{"1:4@2[0,2]+3s", "2:1@2[1]s"}, {3, 0}},
  });
}

TEST_F(SchedulerSpeculativeTest, PrefixCacheSeesOnlyCommittedTokens) {
  Init(8, 4, 16, 3);
  Add(1, 3, 20);
  RunSteps({
      {{"1:3@0[0]s"}, {0}},
      // Drafts fill block 0 (positions 3) and spill into block 1, but none are accepted: block 0
      // holds 4 committed tokens and is computed only up to position 3.
      {{"1:4@3[0,1]+3s"}, {0}},
  });
  // Block 0 now has 4 computed positions (0..3): cached. Block 1 is not full: not cached.
  EXPECT_EQ(pool_->stats().num_cached, 1);
}

}  // namespace
}  // namespace dsv3::scheduler_speculative_test
