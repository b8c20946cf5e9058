// The MTP module under tensor parallelism and under data-parallel attention with expert
// parallelism, on the CPU over gloo (ranks as threads of one process): one step of the main model
// that returns hidden states, the MTP module over those positions, then one chained MTP step fed
// its own output states (what speculative decoding runs each step). Rank 0's logits and hidden
// states must equal one rank's within float32 reassociation (1e-4 relative), and the other ranks
// get none (rank 0 samples).
#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/data_parallel_forward.h"
#include "engine/model/model.h"
#include "tests/fixture_reference.h"
#include "tests/gloo_group.h"
#include "tests/test_util.h"

namespace dsv3::mtp_parallel_test {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::GlooGroup;
using ::dsv3::testing::LoadFixtureReference;
using ::dsv3::testing::RelativeError;

constexpr int32_t kBlockSize = 16;

struct Layout {
  int world = 1;
  bool dp_attention = false;
};

// What rank 0 gets: the main step's logits (each prompt's last row) and hidden states (every row
// but each prompt's last), the MTP pass's logits and output states (every row), the chained
// step's logits (one row per prompt).
struct Outputs {
  std::vector<float> logits, hidden, mtp_logits, mtp_hidden, chain_logits;
};

// Sequence i of `prompts` on attention rank i % world under data-parallel attention (blocks
// numbered within that rank's cache), else every sequence in one cache; room for one position
// past each prompt (the chained step's).
class Steps {
 public:
  Steps(const std::vector<std::vector<int32_t>>& prompts, const Layout& layout)
      : prompts_(prompts) {
    std::vector<int32_t> next_block(layout.world, 0);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const int32_t rank = layout.dp_attention ? static_cast<int32_t>(i) % layout.world : 0;
      const int32_t blocks = (length(i) + 1 + kBlockSize - 1) / kBlockSize;
      std::vector<int32_t> table;
      for (int32_t b = 0; b < blocks; ++b) table.push_back(next_block[rank]++);
      ranks_.push_back(rank);
      tables_.push_back(table);
    }
    for (int32_t used : next_block) blocks_per_cache_ = std::max(blocks_per_cache_, used);
  }

  int32_t blocks_per_cache() const { return blocks_per_cache_; }

  // Every prompt prefilled; hidden states of positions [0, n - 1) (their next token is known).
  ForwardBatch Main() const {
    ForwardBatch b;
    for (size_t i = 0; i < prompts_.size(); ++i) {
      const int32_t begin = b.num_tokens(), n = length(i);
      b.token_ids.insert(b.token_ids.end(), prompts_[i].begin(), prompts_[i].end());
      b.sequences.push_back(Slice(i, begin, n, 0));
      b.logits_rows.push_back(begin + n - 1);
      for (int32_t r = 0; r + 1 < n; ++r) b.hidden_rows.push_back(begin + r);
    }
    return b;
  }

  // The MTP module at positions [0, n - 1) of each prompt, fed t_{i+1}: one row per hidden row
  // of Main(), in its order; every row's logits.
  ForwardBatch Mtp() const {
    ForwardBatch b;
    for (size_t i = 0; i < prompts_.size(); ++i) {
      const int32_t begin = b.num_tokens(), n = length(i) - 1;
      b.token_ids.insert(b.token_ids.end(), prompts_[i].begin() + 1, prompts_[i].end());
      b.sequences.push_back(Slice(i, begin, n, 0));
      for (int32_t r = 0; r < n; ++r) b.logits_rows.push_back(begin + r);
    }
    return b;
  }

  // One chained draft per prompt at position n - 1, fed its first token (any token will do).
  ForwardBatch Chain() const {
    ForwardBatch b;
    for (size_t i = 0; i < prompts_.size(); ++i) {
      b.sequences.push_back(Slice(i, b.num_tokens(), 1, length(i) - 1));
      b.logits_rows.push_back(b.num_tokens());
      b.token_ids.push_back(prompts_[i][0]);
    }
    return b;
  }

  // The chained step's input: each prompt's last MTP output state ([prompts, H]).
  std::vector<float> ChainHidden(const std::vector<float>& mtp_hidden, int64_t h) const {
    std::vector<float> out;
    int64_t row = -1;
    for (size_t i = 0; i < prompts_.size(); ++i) {
      row += length(i) - 1;
      out.insert(out.end(), mtp_hidden.begin() + row * h, mtp_hidden.begin() + (row + 1) * h);
    }
    return out;
  }

 private:
  int32_t length(size_t i) const { return static_cast<int32_t>(prompts_[i].size()); }
  SequenceSlice Slice(size_t i, int32_t begin, int32_t n, int32_t context) const {
    return {.token_begin = begin,
            .num_tokens = n,
            .context_begin = context,
            .block_table = tables_[i],
            .attention_rank = ranks_[i]};
  }

  const std::vector<std::vector<int32_t>>& prompts_;
  std::vector<int32_t> ranks_;
  std::vector<std::vector<int32_t>> tables_;
  int32_t blocks_per_cache_ = 0;
};

// One rank of `layout` (comm of layout.world ranks): the three steps; `hidden` inputs are rank
// 0's, as the engine's are.
Outputs RunRank(const std::string& dir, Communicator& comm, const Layout& layout,
                const Steps& steps) {
  Outputs out;
  CpuBackend backend(1);
  auto model = DeepseekV3Model::Load(dir, backend, comm, {}, layout.dp_attention);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return out;
  DeepseekV3Model& m = **model;
  EXPECT_TRUE(m.has_mtp());
  KvCache cache(backend, m.config(), steps.blocks_per_cache(), kBlockSize, /*mtp_layer=*/true);
  const int64_t h = m.config().hidden_size;
  const auto mtp_step = [&](const ForwardBatch& batch, const std::vector<float>& in,
                            std::vector<float>& logits, std::vector<float>* hidden_out) {
    std::vector<float> scratch;
    return layout.dp_attention
               ? ForwardMtpDataParallel(m, comm, batch, in, cache, logits,
                                        hidden_out != nullptr ? *hidden_out : scratch)
               : m.ForwardMtp(batch, in, cache, logits, hidden_out);
  };
  const absl::Status main =
      layout.dp_attention
          ? ForwardDataParallel(m, nullptr, comm, steps.Main(), cache, out.logits,
                                MlaMode::kAuto, &out.hidden)
          : m.Forward(steps.Main(), cache, out.logits, MlaMode::kAuto, &out.hidden);
  EXPECT_TRUE(main.ok()) << main;
  absl::Status st = mtp_step(steps.Mtp(), out.hidden, out.mtp_logits, &out.mtp_hidden);
  EXPECT_TRUE(st.ok()) << st;
  const std::vector<float> chain_in =
      comm.rank() == 0 ? steps.ChainHidden(out.mtp_hidden, h) : std::vector<float>{};
  st = mtp_step(steps.Chain(), chain_in, out.chain_logits, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

struct Case {
  std::string fixture;
  Layout layout;
  std::string name;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ParallelMtpTest : public ::testing::TestWithParam<Case> {};

TEST_P(ParallelMtpTest, RankZeroGetsOneRanksLogitsAndHiddenStates) {
  const Case& c = GetParam();
  const std::string dir = FixturePath(c.fixture);
  const auto ref = LoadFixtureReference(c.fixture.substr(0, c.fixture.rfind('-')));
  // Three prompts of two tokens or more (the MTP module runs at positions [0, n - 1)).
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : ref.prompts) {
    if (p.size() >= 2 && prompts.size() < 3) prompts.push_back(p);
  }
  ASSERT_EQ(prompts.size(), 3u);

  const Steps one_steps(prompts, Layout{});
  const Outputs want = RunRank(dir, SingleRankCommunicator::Instance(), Layout{}, one_steps);
  ASSERT_FALSE(want.mtp_logits.empty());

  const Steps steps(prompts, c.layout);
  GlooGroup group(c.layout.world);
  for (auto& comm : group.comms) ASSERT_NE(comm, nullptr);
  std::vector<Outputs> got(c.layout.world);
  group.OnEveryRank([&](int r) { got[r] = RunRank(dir, *group.comms[r], c.layout, steps); });

  const struct {
    const char* what;
    std::vector<float> Outputs::*field;
  } fields[] = {{"main logits", &Outputs::logits},
                {"main hidden states", &Outputs::hidden},
                {"MTP logits", &Outputs::mtp_logits},
                {"MTP output states", &Outputs::mtp_hidden},
                {"chained MTP logits", &Outputs::chain_logits}};
  for (const auto& f : fields) {
    ASSERT_EQ((got[0].*f.field).size(), (want.*f.field).size()) << f.what;
    EXPECT_LT(RelativeError(got[0].*f.field, want.*f.field), 1e-4) << f.what;
    for (int r = 1; r < c.layout.world; ++r) {
      EXPECT_TRUE((got[r].*f.field).empty()) << f.what << " on rank " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ParallelMtpTest,
    ::testing::Values(Case{"tiny-fp8", {2, false}, "tp2"}, Case{"tiny-bf16", {4, false}, "tp4"},
                      // Three sequences on two ranks (two and one), and on four (rank 3 idle).
                      Case{"tiny-fp8", {2, true}, "dp2"}, Case{"tiny-fp8", {4, true}, "dp4"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace dsv3::mtp_parallel_test
