// The decode graph runner's choice of graph steps and its padding (engine/model/graph_batch.h):
// which batches run as graphs at which padded size and context bucket, and that padding keeps
// the real sequences as they were and sends the padding rows' KV to the scratch block only;
// under data-parallel attention, the one shape every rank's part of a step runs at.
#include "engine/model/graph_batch.h"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "engine/backend/graph_policy.h"
#include "engine/model/expert_parallel_moe.h"

namespace dsv3::model_graph_batch_test {
namespace {

constexpr int32_t kBlock = 16;
constexpr int32_t kScratch = 99;

// `contexts.size()` sequences of k new tokens each, in row order, context_begin from `contexts`,
// block tables covering their context (block ids 10 s + i).
ForwardBatch Batch(const std::vector<int32_t>& contexts, int32_t k) {
  ForwardBatch b;
  for (size_t s = 0; s < contexts.size(); ++s) {
    SequenceSlice seq{static_cast<int32_t>(s) * k, k, contexts[s], {}};
    for (int32_t i = 0; i * kBlock < seq.context_end(); ++i) {
      seq.block_table.push_back(static_cast<int32_t>(10 * s) + i);
    }
    for (int32_t i = 0; i < k; ++i) {
      b.token_ids.push_back(static_cast<int32_t>(100 + s * k + i));
      b.logits_rows.push_back(static_cast<int32_t>(s) * k + i);
    }
    b.sequences.push_back(seq);
  }
  return b;
}

TEST(GraphShapeOfTest, DecodeAndVerifyStepsGetTheirPaddedShape) {
  const std::vector<int32_t> sizes = GraphBatchSizes(256);
  const struct {
    const char* name;
    std::vector<int32_t> contexts;
    int32_t k;
    bool even_contexts_needed;  // the backend's decode attention pads to the longest context
    std::optional<GraphStepShape> want;
  } cases[] = {
      {"one decode", {5}, 1, true, GraphStepShape{1, 1, 256}},
      {"three decodes pad to 4", {5, 200, 255}, 1, true, GraphStepShape{4, 1, 256}},
      {"bucket from the longest", {300, 400, 500, 600, 700}, 1, true, GraphStepShape{8, 1, 768}},
      {"17 decodes pad to 24", std::vector<int32_t>(17, 40), 1, true, GraphStepShape{24, 1, 256}},
      {"33 decodes pad to 48", std::vector<int32_t>(33, 40), 1, true, GraphStepShape{48, 1, 256}},
      {"verify of 3 tokens", {10, 20, 30}, 3, true, GraphStepShape{4, 3, 256}},
      {"verify of 17 tokens is naive", {10}, 17, true, std::nullopt},
      {"verify too many once padded", std::vector<int32_t>(65, 10), 4, true, std::nullopt},
      {"257 decodes", std::vector<int32_t>(257, 10), 1, true, std::nullopt},
      {"too uneven for GEMMs", {1, 1, 1, 3000}, 1, true, std::nullopt},
      {"uneven, own keys only", {1, 1, 1, 3000}, 1, false, GraphStepShape{4, 1, 3072}},
      {"uneven verify, own keys only", {1, 2000}, 2, false, GraphStepShape{2, 2, 2048}},
      {"own keys only, still no prefill", {10}, 17, false, std::nullopt},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(GraphShapeOf(Batch(c.contexts, c.k), sizes, c.even_contexts_needed), c.want)
        << c.name;
  }
}

TEST(GraphShapeOfTest, MixedAndOutOfOrderStepsStayEager) {
  const std::vector<int32_t> sizes = GraphBatchSizes(256);
  ForwardBatch mixed = Batch({10, 20}, 1);
  mixed.sequences[1].num_tokens = 2;
  mixed.token_ids.push_back(7);
  EXPECT_EQ(GraphShapeOf(mixed, sizes, true), std::nullopt);
  ForwardBatch reordered = Batch({10, 20}, 1);
  std::swap(reordered.sequences[0].token_begin, reordered.sequences[1].token_begin);
  EXPECT_EQ(GraphShapeOf(reordered, sizes, true), std::nullopt);
  EXPECT_EQ(GraphShapeOf(ForwardBatch{}, sizes, true), std::nullopt);
  EXPECT_EQ(GraphShapeOf(Batch({10, 20, 30}, 1), GraphBatchSizes(2), true), std::nullopt);
}

TEST(PadForGraphTest, RealSequencesKeptPaddingGoesToTheScratchBlock) {
  for (int32_t k : {1, 3}) {
    for (bool with_hidden : {false, true}) {
      const ForwardBatch batch = Batch({5, 40, 17}, k);
      const GraphStepShape shape = *GraphShapeOf(batch, GraphBatchSizes(256), true);
      const ForwardBatch padded = PadForGraph(batch, shape, kBlock, kScratch, with_hidden);
      const int32_t rows = shape.sequences * k;
      ASSERT_EQ(padded.sequences.size(), static_cast<size_t>(shape.sequences));
      ASSERT_EQ(padded.num_tokens(), rows);
      const size_t blocks = static_cast<size_t>(shape.context_bucket / kBlock);
      for (size_t s = 0; s < padded.sequences.size(); ++s) {
        const SequenceSlice& seq = padded.sequences[s];
        EXPECT_EQ(seq.num_tokens, k);
        EXPECT_EQ(seq.token_begin, static_cast<int32_t>(s) * k);
        ASSERT_EQ(seq.block_table.size(), blocks) << "every plan of the shape has one size";
        if (s < batch.sequences.size()) {
          const SequenceSlice& real = batch.sequences[s];
          EXPECT_EQ(seq.context_begin, real.context_begin);
          for (size_t i = 0; i < real.block_table.size(); ++i) {
            EXPECT_EQ(seq.block_table[i], real.block_table[i]) << s << " " << i;
          }
          for (size_t i = real.block_table.size(); i < blocks; ++i) {
            EXPECT_EQ(seq.block_table[i], kScratch);
          }
          for (int32_t i = 0; i < k; ++i) {
            EXPECT_EQ(padded.token_ids[seq.token_begin + i], batch.token_ids[real.token_begin + i]);
          }
        } else {
          // A padding row writes its latents only into the scratch block and attends only over
          // the positions it wrote this step.
          EXPECT_EQ(seq.context_begin, 0);
          for (int32_t b : seq.block_table) EXPECT_EQ(b, kScratch);
          for (int32_t i = 0; i < k; ++i) EXPECT_EQ(padded.token_ids[seq.token_begin + i], 0);
        }
      }
      ASSERT_EQ(padded.logits_rows.size(), static_cast<size_t>(rows));
      for (int32_t r = 0; r < rows; ++r) EXPECT_EQ(padded.logits_rows[r], r);
      EXPECT_EQ(padded.hidden_rows, with_hidden ? padded.logits_rows : std::vector<int32_t>{});
    }
  }
}

// One rank's part: Batch(contexts, k); no contexts: an idle rank.
AttentionRankPart Part(const std::vector<int32_t>& contexts, int32_t k) {
  AttentionRankPart part;
  if (!contexts.empty()) part.batch = Batch(contexts, k);
  return part;
}

TEST(DataParallelGraphShapeTest, EveryRankRunsTheLargestPartsShape) {
  const std::vector<int32_t> sizes = GraphBatchSizes(256);
  const struct {
    const char* name;
    std::vector<AttentionRankPart> parts;
    bool even_contexts_needed;
    std::optional<GraphStepShape> want;
  } cases[] = {
      {"one rank", {Part({5, 9, 11}, 1)}, true, GraphStepShape{4, 1, 256}},
      {"the largest padded size", {Part({5}, 1), Part({5, 6, 7, 8, 9}, 1)}, true,
       GraphStepShape{8, 1, 256}},
      {"the longest context bucket", {Part({5, 6}, 1), Part({600}, 1)}, true,
       GraphStepShape{2, 1, 768}},
      {"an idle rank pads too", {Part({5, 6, 7}, 1), Part({}, 1)}, true,
       GraphStepShape{4, 1, 256}},
      {"idle first", {Part({}, 1), Part({}, 1), Part({40}, 1)}, true, GraphStepShape{1, 1, 256}},
      {"every rank idle: eager", {Part({}, 1), Part({}, 1)}, true, std::nullopt},
      {"verify steps", {Part({10}, 3), Part({20, 30}, 3)}, true, GraphStepShape{2, 3, 256}},
      {"k differs", {Part({10}, 1), Part({20}, 2)}, true, std::nullopt},
      {"one part is a prefill", {Part({10}, 1), Part({0}, 17)}, true, std::nullopt},
      {"one part too large", {Part({10}, 1), Part(std::vector<int32_t>(257, 10), 1)}, true,
       std::nullopt},
      {"one part too uneven for GEMMs", {Part({10}, 1), Part({1, 1, 1, 3000}, 1)}, true,
       std::nullopt},
      {"uneven, own keys only", {Part({10}, 1), Part({1, 1, 1, 3000}, 1)}, false,
       GraphStepShape{4, 1, 3072}},
  };
  for (const auto& c : cases) {
    const std::optional<GraphStepShape> got =
        DataParallelGraphShape(c.parts, sizes, c.even_contexts_needed);
    EXPECT_EQ(got, c.want) << c.name;
    // Its rows are the MoE layers' capacity: within the fixed-capacity dispatch's range.
    if (got) {
      EXPECT_LE(got->rows(), kFixedCapacityMaxTokens) << c.name;
    }
  }
}

// A data-parallel part keeps its max_rank_tokens (the capacity the caller set: the shape's
// rows), and an idle rank's empty part pads to B padding sequences in the scratch block.
TEST(PadForGraphTest, DataParallelPartsKeepTheirCapacityAndAnIdleRankPadsToTheShape) {
  const GraphStepShape shape{4, 1, 512};
  ForwardBatch part = Batch({5, 300}, 1);
  part.max_rank_tokens = shape.rows();
  const ForwardBatch padded = PadForGraph(part, shape, kBlock, kScratch, false);
  EXPECT_EQ(padded.max_rank_tokens, 4);
  EXPECT_EQ(padded.num_tokens(), 4);

  ForwardBatch idle;
  idle.max_rank_tokens = shape.rows();
  const ForwardBatch idle_padded = PadForGraph(idle, shape, kBlock, kScratch, false);
  EXPECT_EQ(idle_padded.max_rank_tokens, 4);
  ASSERT_EQ(idle_padded.sequences.size(), 4u);
  EXPECT_EQ(idle_padded.token_ids, std::vector<int32_t>(4, 0));
  for (const SequenceSlice& seq : idle_padded.sequences) {
    EXPECT_EQ(seq.context_begin, 0);
    EXPECT_EQ(seq.block_table, std::vector<int32_t>(512 / kBlock, kScratch));
  }
  EXPECT_EQ(idle_padded.logits_rows, (std::vector<int32_t>{0, 1, 2, 3}));
}

}  // namespace
}  // namespace dsv3::model_graph_batch_test
