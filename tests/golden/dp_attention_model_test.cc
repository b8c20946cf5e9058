// Data-parallel attention with expert parallelism on the CPU over gloo: N ranks (threads of one
// process, each with its own gloo communicator over loopback), each running its own sequences
// with its own KV cache, the routed experts split N ways. Every sequence's logits must equal
// those of one rank running all of them (within float32 reassociation of the expert sums) and
// its greedy tokens must be identical. Ranks that have no sequence in a step still take part.
// Steps through ForwardDataParallel with a decode graph runner (on the CPU its data-parallel
// decode steps run eagerly, at the capacity every rank's graph shape gives) equal those without
// one bit for bit, an idle rank's steps included.
#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/model/model.h"
#include "engine/model/step_graphs.h"
#include "engine/data_parallel_forward.h"
#include "tests/fixture_reference.h"
#include "tests/gloo_group.h"
#include "tests/test_util.h"

namespace dsv3::dp_attention_model_test {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::GlooGroup;
using ::dsv3::testing::LoadFixtureReference;
using ::dsv3::testing::RelativeError;

constexpr int32_t kBlockSize = 16;

// What one sequence produced: the logits of its last prompt row, then of each decode step, and
// its greedy tokens.
struct SequenceOutput {
  std::vector<std::vector<float>> logits;
  std::vector<int32_t> tokens;
};

struct Sequence {
  int id = 0;  // index into the prompts
  int decode_steps = 0;
};

// Runs `mine` (this rank's sequences) for `steps` steps: step 0 prefills them all, step s > 0
// decodes those with decode_steps >= s. Every step calls Forward, with an empty batch when this
// rank has nothing to run.
std::map<int, SequenceOutput> RunSequences(DeepseekV3Model& model, Backend& backend,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const std::vector<Sequence>& mine, int steps) {
  const int64_t vocab = model.config().vocab_size;
  int32_t blocks_per_seq = 1;
  for (const Sequence& s : mine) {
    const int32_t len = static_cast<int32_t>(prompts[s.id].size()) + s.decode_steps;
    blocks_per_seq = std::max(blocks_per_seq, (len + kBlockSize - 1) / kBlockSize);
  }
  KvCache cache(backend, model.config(), std::max<int64_t>(1, mine.size()) * blocks_per_seq,
                kBlockSize);
  std::map<int, SequenceOutput> out;
  std::map<int, int32_t> length;  // tokens in the cache after the step
  for (int step = 0; step < steps; ++step) {
    ForwardBatch batch;
    std::vector<int> ran;
    for (size_t j = 0; j < mine.size(); ++j) {
      const Sequence& s = mine[j];
      if (step > s.decode_steps) continue;
      std::vector<int32_t> table(blocks_per_seq);
      for (int32_t b = 0; b < blocks_per_seq; ++b) table[b] = static_cast<int32_t>(j) * blocks_per_seq + b;
      const std::vector<int32_t> new_tokens =
          step == 0 ? prompts[s.id] : std::vector<int32_t>{out[s.id].tokens.back()};
      const int32_t begin = batch.num_tokens(), n = static_cast<int32_t>(new_tokens.size());
      batch.token_ids.insert(batch.token_ids.end(), new_tokens.begin(), new_tokens.end());
      batch.sequences.push_back({begin, n, step == 0 ? 0 : length[s.id], table});
      batch.logits_rows.push_back(begin + n - 1);
      length[s.id] = (step == 0 ? 0 : length[s.id]) + n;
      ran.push_back(s.id);
    }
    std::vector<float> logits;
    const absl::Status st = model.Forward(batch, cache, logits);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return out;
    EXPECT_EQ(logits.size(), ran.size() * vocab);
    for (size_t i = 0; i < ran.size() && logits.size() == ran.size() * vocab; ++i) {
      const float* row = logits.data() + i * vocab;
      SequenceOutput& o = out[ran[i]];
      o.logits.emplace_back(row, row + vocab);
      o.tokens.push_back(static_cast<int32_t>(std::max_element(row, row + vocab) - row));
    }
  }
  return out;
}

struct Case {
  int world;
  // rank_of[i]: the rank of prompt i; decode_steps[i]: how many tokens it decodes.
  std::vector<int> rank_of;
  std::vector<int> decode_steps;
  std::string name;
};

// gtest prints the case by its name, not as bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class DpAttentionModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(DpAttentionModelTest, EachRanksSequencesMatchOneRank) {
  const Case& c = GetParam();
  const std::string dir = FixturePath("tiny-fp8");
  const auto ref = LoadFixtureReference("tiny");
  ASSERT_LE(c.rank_of.size(), ref.prompts.size());
  const int steps = 1 + *std::max_element(c.decode_steps.begin(), c.decode_steps.end());

  std::vector<Sequence> all;
  for (size_t i = 0; i < c.rank_of.size(); ++i) all.push_back({static_cast<int>(i), c.decode_steps[i]});
  std::map<int, SequenceOutput> single;
  {
    CpuBackend backend(1);
    auto model = DeepseekV3Model::Load(dir, backend);
    ASSERT_TRUE(model.ok()) << model.status();
    single = RunSequences(**model, backend, ref.prompts, all, steps);
  }

  GlooGroup group(c.world);
  ASSERT_EQ(group.comms.size(), static_cast<size_t>(c.world));
  for (auto& comm : group.comms) ASSERT_NE(comm, nullptr);
  std::vector<std::map<int, SequenceOutput>> ranks(c.world);
  std::vector<std::thread> threads;
  for (int r = 0; r < c.world; ++r) {
    threads.emplace_back([&, r] {
      std::vector<Sequence> mine;
      for (const Sequence& s : all) {
        if (c.rank_of[s.id] == r) mine.push_back(s);
      }
      CpuBackend backend(1);
      auto model = DeepseekV3Model::Load(dir, backend, *group.comms[r], {}, /*dp_attention=*/true);
      ASSERT_TRUE(model.ok()) << model.status();
      EXPECT_TRUE((*model)->dp_attention());
      EXPECT_TRUE((*model)->returns_outputs());
      ranks[r] = RunSequences(**model, backend, ref.prompts, mine, steps);
    });
  }
  for (auto& t : threads) t.join();

  for (const Sequence& s : all) {
    const SequenceOutput& want = single[s.id];
    const SequenceOutput& got = ranks[c.rank_of[s.id]][s.id];
    ASSERT_EQ(got.logits.size(), want.logits.size()) << "prompt " << s.id;
    for (size_t step = 0; step < want.logits.size(); ++step) {
      ASSERT_EQ(got.logits[step].size(), want.logits[step].size());
      EXPECT_LT(RelativeError(got.logits[step], want.logits[step]), 1e-4)
          << "prompt " << s.id << " step " << step;
    }
    EXPECT_EQ(got.tokens, want.tokens) << "prompt " << s.id;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Spreads, DpAttentionModelTest,
    ::testing::Values(
        // Rank 1's sequences stop decoding after two steps: it runs empty batches after.
        Case{2, {0, 1, 0, 1, 0}, {6, 2, 6, 2, 5}, "two_ranks_one_goes_idle"},
        // Rank 3 never has a sequence; the others have one or two.
        Case{4, {0, 1, 2, 0, 1}, {4, 4, 3, 4, 2}, "four_ranks_one_always_idle"}),
    [](const auto& info) { return info.param.name; });

// ForwardDataParallel with and without a DecodeGraphRunner, on two ranks over gloo, one
// model per rank and a cache per pass: rank 0 has three sequences, rank 1 one that stops
// decoding after two steps (then idle). With the runner every decode step takes its
// data-parallel path: the graph shape of the largest part (3 sequences pad to 4), so C = 4 on
// both ranks, where the runner-less steps have C = 3, the most tokens of any rank; on the CPU
// that path is the eager Forward at C = 4. A spare capacity changes no sum, so the logits must
// be equal bit for bit.
TEST(ForwardDataParallelTest, DecodeStepsThroughTheGraphRunnerEqualEagerBitForBit) {
  constexpr int kWorld = 2, kDecodeSteps = 4, kBlocksPerSeq = 2, kSeqsPerRank = 3;
  const auto ref = LoadFixtureReference("tiny");
  ASSERT_GE(ref.prompts.size(), 3u);
  // Prompts 2 (17 tokens, twice) and 1 (5) on rank 0, 1 on rank 1: contexts even enough for
  // decode by GEMMs, which the runner asks for on a backend without graphs.
  const struct {
    int prompt, rank, decode_steps;
  } seqs[] = {{2, 0, kDecodeSteps}, {1, 1, 2}, {2, 0, kDecodeSteps}, {1, 0, kDecodeSteps}};
  // The step's batch, the same on every rank: step 0 prefills every sequence, step s decodes
  // (teacher-forced tokens) those with decode_steps >= s. Blocks are numbered within each
  // rank's cache.
  auto step_batch = [&](int step) {
    ForwardBatch batch;
    std::vector<int> slot_on_rank(kWorld, 0);
    for (int i = 0; i < static_cast<int>(std::size(seqs)); ++i) {
      const int32_t slot = slot_on_rank[seqs[i].rank]++;
      if (step > seqs[i].decode_steps) continue;
      std::vector<int32_t> table(kBlocksPerSeq);
      for (int32_t b = 0; b < kBlocksPerSeq; ++b) table[b] = slot * kBlocksPerSeq + b;
      const std::vector<int32_t>& prompt = ref.prompts[seqs[i].prompt];
      const int32_t len = static_cast<int32_t>(prompt.size());
      const std::vector<int32_t> tokens =
          step == 0 ? prompt : std::vector<int32_t>{static_cast<int32_t>(7 * step + i)};
      const int32_t begin = batch.num_tokens(), n = static_cast<int32_t>(tokens.size());
      batch.token_ids.insert(batch.token_ids.end(), tokens.begin(), tokens.end());
      SequenceSlice seq{begin, n, step == 0 ? 0 : len + step - 1, table};
      seq.attention_rank = seqs[i].rank;
      batch.sequences.push_back(seq);
      batch.logits_rows.push_back(begin + n - 1);
    }
    return batch;
  };

  GlooGroup group(kWorld);
  for (auto& comm : group.comms) ASSERT_NE(comm, nullptr);
  std::vector<float> logits[2];  // rank 0's, every step, with the runner and without
  std::vector<int64_t> runner_eager(kWorld, -1);
  group.OnEveryRank([&](int r) {
    CpuBackend backend(1);
    auto model = DeepseekV3Model::Load(FixturePath("tiny-fp8"), backend, *group.comms[r], {},
                                       /*dp_attention=*/true);
    ASSERT_TRUE(model.ok()) << model.status();
    for (int pass = 0; pass < 2; ++pass) {
      KvCache cache(backend, (*model)->config(), kSeqsPerRank * kBlocksPerSeq, kBlockSize);
      DecodeGraphRunner runner(**model);
      for (int step = 0; step <= kDecodeSteps; ++step) {
        std::vector<float> out;
        const absl::Status st = ForwardDataParallel(**model, pass == 0 ? &runner : nullptr,
                                                    *group.comms[r], step_batch(step), cache, out);
        ASSERT_TRUE(st.ok()) << st;
        if (r == 0) logits[pass].insert(logits[pass].end(), out.begin(), out.end());
      }
      if (pass == 0) runner_eager[r] = runner.stats().eager;
    }
  });
  ASSERT_FALSE(logits[0].empty());
  ASSERT_EQ(logits[0].size(), logits[1].size());
  int64_t differing = 0;
  for (size_t i = 0; i < logits[0].size(); ++i) differing += logits[0][i] != logits[1][i];
  EXPECT_EQ(differing, 0) << "of " << logits[0].size() << " logits";
  // Every decode step went through the runner's data-parallel path on both ranks (rank 1 idle
  // in the last two); the prefill went to Forward directly.
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(runner_eager[r], kDecodeSteps) << "rank " << r;
}

TEST(DpAttentionModelConfigTest, ExpertsNotDivisibleByTheRanksAreRejectedByName) {
  // tiny has 8 routed experts: 3 ranks cannot split them.
  GlooGroup group(3);
  std::vector<absl::Status> statuses(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      CpuBackend backend(1);
      statuses[r] = DeepseekV3Model::Load(FixturePath("tiny-fp8"), backend, *group.comms[r], {},
                                          /*dp_attention=*/true)
                        .status();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : statuses) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(s.message()).find("n_routed_experts"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace dsv3::dp_attention_model_test
