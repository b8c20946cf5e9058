#include "engine/parallel/attention_split.h"

#include <algorithm>
#include <cstddef>
#include <map>

namespace dsv3 {

AttentionRankPart SplitForAttentionRank(const ForwardBatch& batch, int rank) {
  AttentionRankPart part;
  // new_row[r]: row r of the step in the part, or -1 when another rank's.
  std::vector<int32_t> new_row(batch.num_tokens(), -1);
  for (const SequenceSlice& s : batch.sequences) {
    if (s.attention_rank != rank) continue;
    SequenceSlice mine = s;
    mine.token_begin = part.batch.num_tokens();
    for (int32_t i = 0; i < s.num_tokens; ++i) {
      new_row[s.token_begin + i] = mine.token_begin + i;
      part.step_rows.push_back(s.token_begin + i);
    }
    part.batch.token_ids.insert(part.batch.token_ids.end(),
                                batch.token_ids.begin() + s.token_begin,
                                batch.token_ids.begin() + s.token_begin + s.num_tokens);
    part.batch.sequences.push_back(std::move(mine));
  }
  // Every rank's tokens; ranks without a sequence have none.
  std::map<int32_t, int32_t> tokens_of_rank;
  for (const SequenceSlice& s : batch.sequences) tokens_of_rank[s.attention_rank] += s.num_tokens;
  part.batch.max_rank_tokens = 0;
  for (const auto& [r, tokens] : tokens_of_rank) {
    part.batch.max_rank_tokens = std::max(part.batch.max_rank_tokens, tokens);
  }
  // The step's rows of one kind that are this rank's, renumbered, with their output indices.
  const auto split_rows = [&](const std::vector<int32_t>& rows, std::vector<int32_t>& part_rows,
                              std::vector<int32_t>& output_rows) {
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const int32_t row = new_row[rows[i]];
      if (row < 0) continue;
      part_rows.push_back(row);
      output_rows.push_back(static_cast<int32_t>(i));
    }
  };
  split_rows(batch.logits_rows, part.batch.logits_rows, part.output_rows);
  split_rows(batch.hidden_rows, part.batch.hidden_rows, part.hidden_output_rows);
  return part;
}

}  // namespace dsv3
