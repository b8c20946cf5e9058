// DataParallelScheduler, step by step: which rank each sequence lands on, which entries each
// step plans on which rank (and in whose blocks), that sampled tokens reach their sequences, and
// that every block of every rank comes back. A fake model stands in for the ranks.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/scheduler/data_parallel_scheduler.h"

namespace dsv3::scheduler_data_parallel_test {
namespace {

// "rank/id:new_tokens@context_begin[blocks]" plus "s" when it samples.
std::string Describe(const ScheduledSequence& s) {
  return absl::StrCat(s.attention_rank, "/", s.id, ":", s.num_new_tokens(), "@", s.context_begin,
                      "[", absl::StrJoin(s.block_table, ","), "]", s.sample ? "s" : "");
}

int32_t FakeToken(SequenceId id) { return 900 + static_cast<int32_t>(id); }

std::vector<int32_t> Prompt(SequenceId id, int32_t length) {
  std::vector<int32_t> tokens(length);
  std::iota(tokens.begin(), tokens.end(), static_cast<int32_t>(id) * 100);
  return tokens;
}

struct Step {
  std::vector<std::string> entries;     // Describe() of each entry, in plan order
  std::vector<SequenceId> finish = {};  // finished after the step commits
};

// Runs `steps` on `s`: schedules, checks the plan, commits one fake token per sampled entry,
// finishes what the step says, and checks the invariants after each.
void RunSteps(DataParallelScheduler& s, const std::vector<Step>& steps) {
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("step ", i));
    const StepPlan plan = s.Schedule();
    std::vector<std::string> got;
    std::vector<int32_t> sampled;
    for (const ScheduledSequence& e : plan.sequences) {
      got.push_back(Describe(e));
      if (e.sample) sampled.push_back(FakeToken(e.id));
    }
    EXPECT_EQ(got, steps[i].entries);
    s.CommitStep(plan, sampled);
    for (const ScheduledSequence& e : plan.sequences) {
      if (!e.sample) continue;
      const Sequence* seq = s.Find(e.id);
      ASSERT_NE(seq, nullptr);
      EXPECT_EQ(seq->token_ids().back(), FakeToken(e.id)) << "sequence " << e.id;
    }
    for (SequenceId id : steps[i].finish) {
      const absl::Status st = s.Finish(id);
      EXPECT_TRUE(st.ok()) << st;
    }
    const absl::Status inv = s.CheckInvariants();
    EXPECT_TRUE(inv.ok()) << inv;
  }
}

SchedulerConfig Config(int32_t max_running_seqs = 4) {
  SchedulerConfig c;
  c.max_batched_tokens = 64;
  c.max_running_seqs = max_running_seqs;
  return c;
}

TEST(DataParallelSchedulerTest, SpreadsSequencesAndPlansEachRankInItsOwnBlocks) {
  // Two ranks of 8 blocks of 4 tokens. Sequences alternate ranks (fewest sequences first); both
  // ranks hand out their own block 0 first: the pools are separate.
  DataParallelScheduler s(Config(), 2, 8, 4);
  for (SequenceId id : {1, 2, 3}) ASSERT_TRUE(s.AddSequence(id, Prompt(id, 5), 3).ok());
  EXPECT_EQ(s.RankOf(1), 0);
  EXPECT_EQ(s.RankOf(2), 1);
  EXPECT_EQ(s.RankOf(3), 0);
  RunSteps(s, {
      {{"0/1:5@0[0,1]s", "0/3:5@0[2,3]s", "1/2:5@0[0,1]s"}},
      {{"0/1:1@5[0,1]s", "0/3:1@5[2,3]s", "1/2:1@5[0,1]s"}, {2}},
      // Rank 1 has nothing to run: its part of the plan is empty.
      {{"0/1:1@6[0,1]s", "0/3:1@6[2,3]s"}, {1, 3}},
  });
  EXPECT_FALSE(s.HasWork());
  EXPECT_EQ(s.pool_stats().num_used, 0);
  EXPECT_EQ(s.pool_stats().num_blocks, 16);
  EXPECT_EQ(s.stats().num_finished, 3);
}

TEST(DataParallelSchedulerTest, NewSequencesGoToTheLeastLoadedRankAndStayThere) {
  DataParallelScheduler s(Config(), 3, 8, 4);
  for (SequenceId id : {1, 2, 3, 4}) ASSERT_TRUE(s.AddSequence(id, Prompt(id, 3), 4).ok());
  // Sequence counts 2, 1, 1: the tie between ranks 1 and 2 goes to the rank with fewer blocks
  // in use, then the lower rank.
  EXPECT_EQ(s.RankOf(4), 0);
  RunSteps(s, {{{"0/1:3@0[0]s", "0/4:3@0[1]s", "1/2:3@0[0]s", "2/3:3@0[0]s"}, {1, 4}}});
  // Rank 0 is empty now: the next sequence goes there, and so does the one after (1, 1, 1
  // sequences, and rank 0 holds no blocks yet). Finished blocks stay cached, so fresh ones come
  // first.
  ASSERT_TRUE(s.AddSequence(5, Prompt(5, 3), 4).ok());
  EXPECT_EQ(s.RankOf(5), 0);
  ASSERT_TRUE(s.AddSequence(6, Prompt(6, 9), 4).ok());
  EXPECT_EQ(s.RankOf(6), 0);
  EXPECT_EQ(s.RankOf(2), 1);  // sticky
  EXPECT_EQ(s.RankOf(3), 2);
  RunSteps(s, {{{"0/5:3@0[2]s", "0/6:9@0[3,4,5]s", "1/2:1@3[0]s", "2/3:1@3[0]s"}}});
}

// Ranks 0 and 1 each cache the two full blocks of one finished prompt (A = Prompt(1, 9) on rank
// 0, B = Prompt(2, 9) on rank 1; blocks of 4 tokens). Then the case's prompts are added in order
// (none runs): each goes where the file comment of data_parallel_scheduler.h says.
struct PlacementCase {
  const char* name;
  DataParallelPlacement placement;
  bool prefix_caching;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> ranks;  // where each prompt goes
};

// The first `n` tokens of `prompt`, then `extra` tokens no other prompt has.
std::vector<int32_t> PrefixOf(const std::vector<int32_t>& prompt, size_t n, int32_t extra) {
  std::vector<int32_t> out(prompt.begin(), prompt.begin() + n);
  for (int32_t i = 0; i < extra; ++i) out.push_back(5000 + i);
  return out;
}

TEST(DataParallelSchedulerTest, PromptsGoWhereTheirPrefixIsCachedUnlessTheLoadsAreImbalanced) {
  const std::vector<int32_t> a = Prompt(1, 9), b = Prompt(2, 9);
  const std::vector<int32_t> b_turn = PrefixOf(b, 8, 3);  // B's two blocks: 8 of 11 cached
  const PlacementCase cases[] = {
      {"B's prefix goes to rank 1, every time within SGLang's thresholds", {}, true,
       {b_turn, b_turn, b_turn, b_turn}, {1, 1, 1, 1}},
      {"A's prefix goes to rank 0", {}, true, {PrefixOf(a, 8, 5)}, {0}},
      {"until rank 1 has more than 2 sequences more than rank 0 (and 1.5x as many)",
       {.balance_abs_threshold = 2}, true, {b_turn, b_turn, b_turn, b_turn, b_turn},
       {1, 1, 1, 0, 1}},
      {"a cached quarter of the prompt is not enough (least loaded: rank 0, the lower)", {}, true,
       {PrefixOf(b, 4, 12)}, {0}},
      {"a lower threshold takes it", {.cache_threshold = 0.2}, true, {PrefixOf(b, 4, 12)}, {1}},
      {"without prefix caching: the least loaded rank", {}, false, {b_turn, b_turn, b_turn},
       {0, 1, 0}},
  };
  for (const PlacementCase& c : cases) {
    SCOPED_TRACE(c.name);
    SchedulerConfig config = Config(8);
    config.enable_prefix_caching = c.prefix_caching;
    DataParallelScheduler s(config, 2, 16, 4, c.placement);
    ASSERT_TRUE(s.AddSequence(1, a, 2).ok());
    ASSERT_TRUE(s.AddSequence(2, b, 2).ok());
    RunSteps(s, {{{"0/1:9@0[0,1,2]s", "1/2:9@0[0,1,2]s"}, {1, 2}}});
    const BlockPoolStats before = s.pool_stats();
    SequenceId id = 10;
    for (size_t i = 0; i < c.prompts.size(); ++i, ++id) {
      ASSERT_TRUE(s.AddSequence(id, c.prompts[i], 2).ok());
      EXPECT_EQ(s.RankOf(id), c.ranks[i]) << "prompt " << i;
    }
    // Looking for a prompt's prefix on every rank is not a request's lookup: no pool counts it.
    EXPECT_EQ(s.pool_stats().prefix_queried_blocks, before.prefix_queried_blocks);
    EXPECT_EQ(s.pool_stats().prefix_hit_blocks, before.prefix_hit_blocks);
    const absl::Status inv = s.CheckInvariants();
    EXPECT_TRUE(inv.ok()) << inv;
  }
}

TEST(DataParallelSchedulerTest, LimitsApplyPerRank) {
  // One seat per rank: two sequences run at once on two ranks, the third waits for rank 0.
  DataParallelScheduler s(Config(/*max_running_seqs=*/1), 2, 8, 4);
  for (SequenceId id : {1, 2, 3}) ASSERT_TRUE(s.AddSequence(id, Prompt(id, 2), 2).ok());
  RunSteps(s, {
      {{"0/1:2@0[0]s", "1/2:2@0[0]s"}},
      {{"0/1:1@2[0]s", "1/2:1@2[0]s"}, {1, 2}},
      {{"0/3:2@0[1]s"}},  // block 0 stays cached for sequence 1's prefix
  });
  EXPECT_EQ(s.stats().num_running, 1);
}

TEST(DataParallelSchedulerTest, AbortAndFinishFindTheRankAndReturnItsBlocks) {
  DataParallelScheduler s(Config(), 2, 8, 4);
  ASSERT_TRUE(s.AddSequence(1, Prompt(1, 6), 4).ok());
  ASSERT_TRUE(s.AddSequence(2, Prompt(2, 6), 4).ok());
  EXPECT_EQ(s.AddSequence(2, Prompt(2, 6), 4).code(), absl::StatusCode::kAlreadyExists);
  RunSteps(s, {{{"0/1:6@0[0,1]s", "1/2:6@0[0,1]s"}}});
  EXPECT_EQ(s.pool_stats().num_used, 4);
  ASSERT_TRUE(s.Abort(2).ok());
  EXPECT_EQ(s.RankOf(2), -1);
  EXPECT_EQ(s.Find(2), nullptr);
  EXPECT_EQ(s.rank_pool(1).stats().num_used, 0);
  EXPECT_EQ(s.Abort(2).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.Finish(7).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(s.Finish(1).ok());
  EXPECT_EQ(s.pool_stats().num_used, 0);
  EXPECT_TRUE(s.CheckInvariants().ok());
}

TEST(DataParallelSchedulerTest, OneRankIsThePlainScheduler) {
  DataParallelScheduler s(Config(), 1, 8, 4);
  ASSERT_TRUE(s.AddSequence(1, Prompt(1, 5), 2).ok());
  ASSERT_TRUE(s.AddSequence(2, Prompt(2, 3), 2).ok());
  RunSteps(s, {{{"0/1:5@0[0,1]s", "0/2:3@0[2]s"}},
               {{"0/1:1@5[0,1]s", "0/2:1@3[2]s"}, {1, 2}}});
  EXPECT_EQ(s.pool_stats().num_used, 0);
}

}  // namespace
}  // namespace dsv3::scheduler_data_parallel_test
