// Table-driven tests of Scheduler: each test builds a few sequences, then steps the scheduler and
// checks after every step which sequences ran, how many tokens each, from which position, in
// which blocks, and what was preempted.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/scheduler/scheduler.h"

namespace dsv3::scheduler_step_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// One expected plan entry: "id:new_tokens@context_begin[blocks]" plus "s" when it samples.
std::string Describe(const ScheduledSequence& s) {
  return absl::StrCat(s.id, ":", s.num_new_tokens(), "@", s.context_begin, "[",
                      absl::StrJoin(s.block_table, ","), "]", s.sample ? "s" : "");
}

struct Step {
  std::vector<std::string> entries;  // Describe() of each plan entry, in plan order
  std::vector<SequenceId> preempted = {};
  std::vector<SequenceId> finish = {};  // finished after the step commits
};

// The token a fake model samples for `id`: any fixed value works.
int32_t FakeToken(SequenceId id) { return 900 + static_cast<int32_t>(id); }

std::vector<int32_t> Prompt(SequenceId id, int32_t length) {
  std::vector<int32_t> tokens(length);
  std::iota(tokens.begin(), tokens.end(), static_cast<int32_t>(id) * 100);
  return tokens;
}

class SchedulerStepTest : public ::testing::Test {
 protected:
  void Init(int32_t num_blocks, int32_t block_size, int32_t max_batched_tokens,
            int32_t max_running_seqs = 4, bool prefix_caching = true,
            std::unique_ptr<SchedulingPolicy> policy = std::make_unique<FcfsPolicy>()) {
    pool_ = std::make_unique<BlockPool>(num_blocks, block_size, BlockHasher({1, 2, 3, 4}));
    SchedulerConfig config;
    config.max_batched_tokens = max_batched_tokens;
    config.max_running_seqs = max_running_seqs;
    config.enable_prefix_caching = prefix_caching;
    scheduler_ = std::make_unique<Scheduler>(config, *pool_, std::move(policy));
  }

  void Add(SequenceId id, std::vector<int32_t> prompt, int32_t max_new_tokens = 8) {
    const absl::Status status = scheduler_->AddSequence(id, std::move(prompt), max_new_tokens);
    ASSERT_TRUE(status.ok()) << status;
  }

  // Schedules one step and returns its plan after checking it against `step`; commits unless
  // `commit` is false.
  StepPlan RunStep(const Step& step, int step_number, bool commit = true) {
    SCOPED_TRACE(absl::StrCat("step ", step_number));
    StepPlan plan = scheduler_->Schedule();
    std::vector<std::string> got;
    for (const ScheduledSequence& s : plan.sequences) got.push_back(Describe(s));
    EXPECT_EQ(got, step.entries);
    EXPECT_EQ(plan.preempted, step.preempted);
    if (!commit) return plan;
    std::vector<int32_t> sampled;
    for (const ScheduledSequence& s : plan.sequences) {
      if (s.sample) sampled.push_back(FakeToken(s.id));
    }
    scheduler_->CommitStep(plan, sampled);
    for (SequenceId id : step.finish) EXPECT_TRUE(scheduler_->Finish(id).ok()) << id;
    EXPECT_TRUE(scheduler_->CheckInvariants().ok()) << scheduler_->CheckInvariants();
    return plan;
  }

  void RunSteps(const std::vector<Step>& steps) {
    for (size_t i = 0; i < steps.size(); ++i) RunStep(steps[i], static_cast<int>(i + 1));
  }

  // Nothing running or waiting, every block free or held only by the prefix cache.
  void ExpectDrained() {
    EXPECT_FALSE(scheduler_->HasWork());
    EXPECT_TRUE(scheduler_->CheckInvariants().ok()) << scheduler_->CheckInvariants();
    const BlockPoolStats s = pool_->stats();
    EXPECT_EQ(s.num_used, 0);
    EXPECT_EQ(s.num_free + s.num_evictable, s.num_blocks);
  }

  std::unique_ptr<BlockPool> pool_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerStepTest, PrefillThenDecodeAcrossBlockBoundary) {
  Init(/*num_blocks=*/8, /*block_size=*/4, /*max_batched_tokens=*/16);
  Add(1, Prompt(1, 6));
  RunSteps({
      {{"1:6@0[0,1]s"}},
      {{"1:1@6[0,1]s"}},
      {{"1:1@7[0,1]s"}},
      {{"1:1@8[0,1,2]s"}, {}, {1}},
  });
  ExpectDrained();
  // Blocks 0 and 1 filled up and stay cached; block 2 held one token and is free again.
  EXPECT_EQ(pool_->stats().num_evictable, 2);
  EXPECT_EQ(pool_->stats().num_free, 6);
}

TEST_F(SchedulerStepTest, ChunkedPrefillOfLongPrompt) {
  Init(8, 4, /*max_batched_tokens=*/4, /*max_running_seqs=*/4);
  Add(1, Prompt(1, 10));
  RunSteps({
      {{"1:4@0[0]"}},
      {{"1:4@4[0,1]"}},
      {{"1:2@8[0,1,2]s"}},
      {{"1:1@10[0,1,2]s"}, {}, {1}},
  });
  ExpectDrained();
  EXPECT_THAT(scheduler_->stats().num_finished, 1);
}

TEST_F(SchedulerStepTest, TokenBudgetSplitsTheSecondPrompt) {
  Init(16, 4, /*max_batched_tokens=*/8);
  Add(1, Prompt(1, 5));
  Add(2, Prompt(2, 5));
  RunSteps({
      {{"1:5@0[0,1]s", "2:3@0[2]"}},
      {{"1:1@5[0,1]s", "2:2@3[2,3]s"}, {}, {1, 2}},
  });
  ExpectDrained();
}

TEST_F(SchedulerStepTest, DecodesComeFirstAndPrefillGetsTheRest) {
  Init(16, 4, /*max_batched_tokens=*/6);
  Add(1, Prompt(1, 2));
  Add(2, Prompt(2, 2));
  RunStep({{"1:2@0[0]s", "2:2@0[1]s"}}, 1);
  Add(3, Prompt(3, 12));
  RunSteps({
      {{"1:1@2[0]s", "2:1@2[1]s", "3:4@0[2]"}},
      {{"1:1@3[0]s", "2:1@3[1]s", "3:4@4[2,3]"}},
      {{"1:1@4[0,4]s", "2:1@4[1,5]s", "3:4@8[2,3,6]s"}, {}, {1, 2}},
      {{"3:1@12[2,3,6,7]s"}, {}, {3}},
  });
  ExpectDrained();
}

// Serves lower ids first, so that a new sequence can be placed before running ones.
class LowerIdFirst final : public SchedulingPolicy {
 public:
  bool Before(const Sequence& a, const Sequence& b) const override { return a.id() < b.id(); }
};

// A prefill scheduled before running decodes leaves one token of the budget for each of them.
TEST_F(SchedulerStepTest, BudgetIsReservedForDecodesLaterInPolicyOrder) {
  Init(16, 4, /*max_batched_tokens=*/4, /*max_running_seqs=*/4, /*prefix_caching=*/true,
       std::make_unique<LowerIdFirst>());
  Add(5, Prompt(5, 2));
  RunStep({{"5:2@0[0]s"}}, 1);
  Add(1, Prompt(1, 12));
  RunSteps({
      {{"5:1@2[0]s", "1:3@0[1]"}},
      {{"5:1@3[0]s", "1:3@3[1,2]"}},
      {{"5:1@4[0,4]s", "1:3@6[1,2,3]"}},
      {{"5:1@5[0,4]s", "1:3@9[1,2,3]s"}, {}, {1, 5}},
  });
  EXPECT_EQ(scheduler_->running_ids(), std::vector<SequenceId>{});
  ExpectDrained();
}

TEST_F(SchedulerStepTest, MaxRunningSeqsHoldsBackAdmission) {
  Init(16, 4, /*max_batched_tokens=*/8, /*max_running_seqs=*/2);
  Add(1, Prompt(1, 2));
  Add(2, Prompt(2, 2));
  Add(3, Prompt(3, 2));
  RunSteps({
      {{"1:2@0[0]s", "2:2@0[1]s"}},
      {{"1:1@2[0]s", "2:1@2[1]s"}, {}, {1}},
      {{"2:1@3[1]s", "3:2@0[2]s"}, {}, {2, 3}},
  });
  ExpectDrained();
}

// Without the prefix cache a preempted sequence recomputes its prompt and output from position 0
// and then continues where it was.
TEST_F(SchedulerStepTest, PreemptsNewestAndRecomputesPromptAndOutput) {
  Init(/*num_blocks=*/4, /*block_size=*/2, /*max_batched_tokens=*/8, /*max_running_seqs=*/4,
       /*prefix_caching=*/false);
  Add(1, Prompt(1, 3), /*max_new_tokens=*/5);
  Add(2, Prompt(2, 3), /*max_new_tokens=*/5);
  RunSteps({
      {{"1:3@0[0,1]s", "2:3@0[2,3]s"}},
      {{"1:1@3[0,1]s", "2:1@3[2,3]s"}},
      {{"1:1@4[0,1,3]s"}, {2}},
      {{"1:1@5[0,1,3]s"}},  // 2 needs 3 blocks, 1 is free: not admitted
      {{"1:1@6[0,1,3,2]s"}, {}, {1}},
      {{"2:5@0[2,3,1]s"}},  // 3 prompt + 2 output tokens
      {{"2:1@5[2,3,1]s"}},
      {{"2:1@6[2,3,1,0]s"}, {}, {2}},
  });
  EXPECT_EQ(scheduler_->stats().num_preemptions, 1);
  ExpectDrained();
}

// With the prefix cache, the victim's full blocks stay cached when released, least useful (last)
// first on the LRU list, and an allocation under pressure evicts them in that order.
TEST_F(SchedulerStepTest, PreemptedBlocksAreEvictedLastBlockFirst) {
  Init(4, 2, 8, 4, /*prefix_caching=*/true);
  Add(1, Prompt(1, 3), 5);
  Add(2, Prompt(2, 3), 5);
  RunSteps({
      {{"1:3@0[0,1]s", "2:3@0[2,3]s"}},
      {{"1:1@3[0,1]s", "2:1@3[2,3]s"}},
      {{"1:1@4[0,1,3]s"}, {2}},  // evicts 2's second block, keeps its first
  });
  EXPECT_EQ(pool_->stats().num_evictable, 1);
  RunSteps({
      // 2 would hit its first block but still lacks 2 more: not admitted.
      {{"1:1@5[0,1,3]s"}},
      {{"1:1@6[0,1,3,2]s"}, {}, {1}},
      {{"2:5@0[2,3,1]s"}},
  });
}

TEST_F(SchedulerStepTest, PreemptedSequenceResumesFromItsCachedPrefix) {
  Init(/*num_blocks=*/5, /*block_size=*/2, /*max_batched_tokens=*/8, /*max_running_seqs=*/4);
  Add(1, Prompt(1, 4), /*max_new_tokens=*/5);
  Add(2, Prompt(2, 4), /*max_new_tokens=*/3);
  RunSteps({
      {{"1:4@0[0,1]s", "2:4@0[2,3]s"}},
      {{"1:1@4[0,1,4]s"}, {2}},  // 2 finds no block for position 4 and is the newest
      {{"1:1@5[0,1,4]s"}, {}, {1}},
  });
  EXPECT_THAT(scheduler_->waiting_ids(), ElementsAre(2));
  // 2's blocks were cached before it was preempted: only its last token is recomputed.
  RunSteps({
      {{"2:1@4[2,3,4]s"}},
      {{"2:1@5[2,3,4]s"}, {}, {2}},
  });
  EXPECT_EQ(pool_->stats().prefix_hit_blocks, 2);
  EXPECT_EQ(scheduler_->stats().num_preemptions, 1);
  ExpectDrained();
}

TEST_F(SchedulerStepTest, PrefixHitOnSecondIdenticalPrompt) {
  Init(16, 4, 32);
  const std::vector<int32_t> prompt = Prompt(7, 10);
  Add(1, prompt);
  RunStep({{"1:10@0[0,1,2]s"}, {}, {1}}, 1);
  Add(2, prompt);
  // Two full blocks hit; the last two prompt tokens are computed in a fresh block.
  RunStep({{"2:2@8[0,1,3]s"}, {}, {2}}, 2);
  EXPECT_EQ(pool_->stats().prefix_hit_blocks, 2);
  EXPECT_EQ(pool_->stats().prefix_queried_blocks, 3);  // 1 (the miss of the first prompt) + 2
  ExpectDrained();
}

TEST_F(SchedulerStepTest, FullPromptHitRecomputesTheBlockOfTheLastToken) {
  Init(16, 4, 32);
  const std::vector<int32_t> prompt = Prompt(7, 8);
  Add(1, prompt);
  RunStep({{"1:8@0[0,1]s"}, {}, {1}}, 1);
  EXPECT_EQ(pool_->stats().num_cached, 2);
  Add(2, prompt);
  RunStep({{"2:4@4[0,2]s"}, {}, {2}}, 2);
  ExpectDrained();
}

TEST_F(SchedulerStepTest, RunningSequencesShareCachedPrefixBlocks) {
  Init(16, 4, 32);
  std::vector<int32_t> prompt = Prompt(7, 8);
  Add(1, prompt);
  RunStep({{"1:8@0[0,1]s"}}, 1);
  prompt.push_back(5);
  prompt.push_back(6);
  Add(2, prompt);
  RunStep({{"1:1@8[0,1,2]s", "2:2@8[0,1,3]s"}}, 2);
  EXPECT_EQ(pool_->ref_count(0), 2);
  EXPECT_EQ(pool_->ref_count(1), 2);
  ASSERT_TRUE(scheduler_->Abort(1).ok());
  EXPECT_EQ(pool_->ref_count(0), 1);
  EXPECT_TRUE(scheduler_->CheckInvariants().ok()) << scheduler_->CheckInvariants();
  ASSERT_TRUE(scheduler_->Abort(2).ok());
  ExpectDrained();
}

TEST_F(SchedulerStepTest, AbortInEveryState) {
  Init(16, 4, /*max_batched_tokens=*/4, /*max_running_seqs=*/4);
  Add(1, Prompt(1, 10));  // aborted mid-prefill
  Add(2, Prompt(2, 2));   // aborted mid-decode
  Add(3, Prompt(3, 2));   // aborted while waiting
  Add(4, Prompt(4, 1));   // aborted between Schedule and CommitStep
  RunStep({{"1:4@0[0]"}}, 1);
  ASSERT_TRUE(scheduler_->Abort(3).ok());
  EXPECT_EQ(scheduler_->Find(3), nullptr);
  RunStep({{"1:4@4[0,1]"}}, 2);
  ASSERT_TRUE(scheduler_->Abort(1).ok());
  RunStep({{"4:1@0[3]s", "2:2@0[2]s"}}, 3);  // single-token entries first
  RunStep({{"2:1@2[2]s", "4:1@1[3]s"}}, 4);
  ASSERT_TRUE(scheduler_->Abort(2).ok());
  const StepPlan plan = RunStep({{"4:1@2[3]s"}}, 5, /*commit=*/false);
  ASSERT_TRUE(scheduler_->Abort(4).ok());
  scheduler_->CommitStep(plan, {FakeToken(4)});
  EXPECT_EQ(scheduler_->stats().num_aborted, 4);
  EXPECT_TRUE(absl::IsNotFound(scheduler_->Abort(4)));
  ExpectDrained();
  // Sequence 1's two computed full blocks stay in the prefix cache.
  EXPECT_EQ(pool_->stats().num_cached, 2);
}

TEST_F(SchedulerStepTest, AbortPreemptedSequence) {
  Init(4, 2, 8, 4, /*prefix_caching=*/false);
  Add(1, Prompt(1, 3), 5);
  Add(2, Prompt(2, 3), 5);
  RunSteps({
      {{"1:3@0[0,1]s", "2:3@0[2,3]s"}},
      {{"1:1@3[0,1]s", "2:1@3[2,3]s"}},
      {{"1:1@4[0,1,3]s"}, {2}},
  });
  EXPECT_EQ(scheduler_->Find(2)->status(), SequenceStatus::kPreempted);
  EXPECT_EQ(scheduler_->Find(2)->num_output_tokens(), 2);
  EXPECT_TRUE(absl::IsFailedPrecondition(scheduler_->Finish(2)));
  ASSERT_TRUE(scheduler_->Abort(2).ok());
  ASSERT_TRUE(scheduler_->Abort(1).ok());
  ExpectDrained();
}

TEST_F(SchedulerStepTest, AddSequenceRejectsWhatCanNeverRun) {
  Init(/*num_blocks=*/4, /*block_size=*/4, 16);
  struct Row {
    SequenceId id;
    int32_t prompt_len, max_new;
    absl::StatusCode code;
    const char* message;
  };
  Add(1, Prompt(1, 2));
  const Row rows[] = {
      {1, 2, 4, absl::StatusCode::kAlreadyExists, "sequence 1 already exists"},
      {2, 0, 4, absl::StatusCode::kInvalidArgument, "prompt_ids must not be empty"},
      {3, 2, 0, absl::StatusCode::kInvalidArgument, "max_new_tokens must be >= 1, got 0"},
      {4, 10, 8, absl::StatusCode::kInvalidArgument, "needs 5 KV blocks; the cache has 4"},
  };
  for (const Row& r : rows) {
    const absl::Status s = scheduler_->AddSequence(r.id, Prompt(r.id, r.prompt_len), r.max_new);
    EXPECT_EQ(s.code(), r.code) << r.message;
    EXPECT_THAT(s.message(), HasSubstr(r.message));
  }
  EXPECT_TRUE(scheduler_->AddSequence(5, Prompt(5, 10), 7).ok());  // 16 positions: 4 blocks
}

TEST(SchedulerConfigTest, Validate) {
  struct Row {
    int32_t tokens, seqs;
    const char* error;  // nullptr: valid
  };
  const Row rows[] = {
      {8192, 256, nullptr},
      {4, 4, nullptr},
      {0, 1, "max_batched_tokens must be >= 1, got 0"},
      {4, 0, "max_running_seqs must be >= 1, got 0"},
      {4, 8, "max_batched_tokens must be >= max_running_seqs (8), got 4"},
  };
  for (const Row& r : rows) {
    SchedulerConfig c;
    c.max_batched_tokens = r.tokens;
    c.max_running_seqs = r.seqs;
    const absl::Status s = c.Validate();
    if (r.error == nullptr) {
      EXPECT_TRUE(s.ok()) << s;
    } else {
      EXPECT_EQ(s.message(), r.error);
    }
  }
}

}  // namespace
}  // namespace dsv3::scheduler_step_test
