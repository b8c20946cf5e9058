// SplitForAttentionRank: each rank's part of a data-parallel step, table-driven over the ranks
// of one step in which sequences of three ranks interleave and rank 3 has none.
#include <gtest/gtest.h>

#include <vector>

#include "engine/parallel/attention_split.h"

namespace dsv3::parallel_attention_split_test {
namespace {

// Four sequences: rows [0,3) rank 1, [3,4) rank 0, [4,6) rank 1, [6,7) rank 2. Logits of every
// sequence's last row, plus row 1 (a --logits-out style extra row) after them; hidden states of
// rows 6, 0, 4 and 3 (the MTP module's inputs, in an order of their own).
ForwardBatch Step() {
  ForwardBatch b;
  b.token_ids = {10, 11, 12, 20, 30, 31, 40};
  b.sequences = {{.token_begin = 0, .num_tokens = 3, .context_begin = 0, .block_table = {7},
                  .attention_rank = 1},
                 {.token_begin = 3, .num_tokens = 1, .context_begin = 9, .block_table = {0, 1},
                  .attention_rank = 0},
                 {.token_begin = 4, .num_tokens = 2, .context_begin = 4, .block_table = {2},
                  .attention_rank = 1},
                 {.token_begin = 6, .num_tokens = 1, .context_begin = 0, .block_table = {5},
                  .attention_rank = 2}};
  b.logits_rows = {2, 3, 5, 6, 1};
  b.hidden_rows = {6, 0, 4, 3};
  return b;
}

struct Expected {
  int rank;
  std::vector<int32_t> token_ids;
  std::vector<int32_t> token_begins;
  std::vector<int32_t> context_begins;
  std::vector<std::vector<int32_t>> block_tables;
  std::vector<int32_t> logits_rows;
  std::vector<int32_t> output_rows;
  std::vector<int32_t> hidden_rows;
  std::vector<int32_t> hidden_output_rows;
  std::vector<int32_t> step_rows;
};

TEST(AttentionSplitTest, EachRankGetsItsSequencesRenumberedAndItsLogitsAndHiddenRows) {
  const Expected table[] = {
      {0, {20}, {0}, {9}, {{0, 1}}, {0}, {1}, {0}, {3}, {3}},
      {1, {10, 11, 12, 30, 31}, {0, 3}, {0, 4}, {{7}, {2}}, {2, 4, 1}, {0, 2, 4}, {0, 3}, {1, 2},
       {0, 1, 2, 4, 5}},
      {2, {40}, {0}, {0}, {{5}}, {0}, {3}, {0}, {0}, {6}},
      {3, {}, {}, {}, {}, {}, {}, {}, {}, {}},
  };
  const ForwardBatch step = Step();
  size_t rows_seen = 0, hidden_seen = 0;
  for (const Expected& e : table) {
    SCOPED_TRACE(e.rank);
    const AttentionRankPart part = SplitForAttentionRank(step, e.rank);
    EXPECT_EQ(part.batch.token_ids, e.token_ids);
    std::vector<int32_t> begins, contexts;
    std::vector<std::vector<int32_t>> tables;
    for (const SequenceSlice& s : part.batch.sequences) {
      EXPECT_EQ(s.attention_rank, e.rank);
      begins.push_back(s.token_begin);
      contexts.push_back(s.context_begin);
      tables.push_back(s.block_table);
    }
    EXPECT_EQ(begins, e.token_begins);
    EXPECT_EQ(contexts, e.context_begins);
    EXPECT_EQ(tables, e.block_tables);
    EXPECT_EQ(part.batch.logits_rows, e.logits_rows);
    EXPECT_EQ(part.output_rows, e.output_rows);
    EXPECT_EQ(part.batch.hidden_rows, e.hidden_rows);
    EXPECT_EQ(part.hidden_output_rows, e.hidden_output_rows);
    EXPECT_EQ(part.step_rows, e.step_rows);
    for (size_t i = 0; i < part.step_rows.size(); ++i) {
      EXPECT_EQ(part.batch.token_ids[i], step.token_ids[part.step_rows[i]]);
    }
    // A logits row of the part holds the same token as the step's row it stands for.
    for (size_t i = 0; i < part.output_rows.size(); ++i) {
      EXPECT_EQ(part.batch.token_ids[part.batch.logits_rows[i]],
                step.token_ids[step.logits_rows[part.output_rows[i]]]);
    }
    rows_seen += part.output_rows.size();
    hidden_seen += part.hidden_output_rows.size();
  }
  EXPECT_EQ(rows_seen, step.logits_rows.size());  // every output row has exactly one rank
  EXPECT_EQ(hidden_seen, step.hidden_rows.size());
}

// Every rank's part carries the most tokens of any rank (rank 1's 5 here), idle rank 3's too:
// the MoE layers' fixed-capacity dispatch needs the same C on every rank.
TEST(AttentionSplitTest, EveryPartCarriesTheLargestRanksTokenCount) {
  const ForwardBatch step = Step();
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(SplitForAttentionRank(step, rank).batch.max_rank_tokens, 5) << "rank " << rank;
  }
  EXPECT_EQ(SplitForAttentionRank(ForwardBatch{}, 0).batch.max_rank_tokens, 0);  // all idle
  EXPECT_EQ(ForwardBatch{}.max_rank_tokens, -1);  // unsplit: not known
}

}  // namespace
}  // namespace dsv3::parallel_attention_split_test
