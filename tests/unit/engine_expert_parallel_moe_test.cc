// ExpertParallelMoe's two dispatch layouts (engine/model/expert_parallel_moe.h) on the CPU over
// gloo, ranks as threads: the fixed-capacity layout must give every token the compacted layout's
// result bit for bit (the non-owners' zero partials change no sum), with 2 and 4 ranks, uneven
// token counts, idle ranks, a step where every rank is idle and a capacity above the largest
// count; both must equal one rank's MoeExperts over all experts up to float reassociation. The
// fixed-capacity layout must also move nothing between host and backend and pass no host index
// data (what a CUDA graph cannot hold), where the compacted one reads the ids back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/forwarding_backend.h"
#include "engine/model/expert_parallel_moe.h"
#include "tests/gloo_group.h"
#include "tests/moe_routing_util.h"
#include "tests/op_table.h"

namespace dsv3::engine_expert_parallel_moe_test {
namespace {

using ::dsv3::testing::GlooGroup;

constexpr int64_t kHidden = 64, kInter = 32, kExperts = 8, kTopK = 3;

// Counts the calls that move data between host and backend or take host index data: on a GPU
// each is an upload or a synchronization.
class HostTrafficBackend final : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  int calls = 0;

  Tensor Upload(const TensorView& host) override {
    ++calls;
    return inner().Upload(host);
  }
  void Download(const TensorView& t, float* host) override {
    ++calls;
    inner().Download(t, host);
  }
  void CopyToHost(const TensorView& src, void* host) override {
    ++calls;
    inner().CopyToHost(src, host);
  }
  void CopyFromHost(const void* host, const TensorView& dst) override {
    ++calls;
    inner().CopyFromHost(host, dst);
  }
  void GatherRows(const TensorView& x, std::span<const int32_t> rows,
                  const TensorView& out) override {
    ++calls;
    inner().GatherRows(x, rows, out);
  }
  void ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                      const TensorView& out) override {
    ++calls;
    inner().ScatterSumRows(x, index, out);
  }
};

// One rank's tokens: hidden [T, H], top-k ids and weights [T, k].
struct RankTokens {
  std::vector<float> x, weights;
  std::vector<int32_t> ids;
  int64_t t() const { return static_cast<int64_t>(ids.size()) / kTopK; }
};

struct Case {
  std::string name;
  std::vector<int64_t> tokens;  // per rank; world = tokens.size()
  int64_t spare_capacity = 0;   // C = the largest count + this
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ExpertParallelLayoutsTest : public ::testing::TestWithParam<Case> {};

TEST_P(ExpertParallelLayoutsTest, FixedCapacityEqualsCompactedBitForBit) {
  const Case& c = GetParam();
  const int world = static_cast<int>(c.tokens.size());
  const int64_t local = kExperts / world;
  const int64_t capacity = *std::max_element(c.tokens.begin(), c.tokens.end()) + c.spare_capacity;

  // Every expert, made once (host memory any rank's CPU backend reads).
  CpuBackend maker(1);
  std::mt19937 rng(17);
  ::dsv3::testing::OpInputs in(maker, rng);
  std::vector<ExpertWeights> experts;
  for (int64_t e = 0; e < kExperts; ++e) {
    experts.push_back({in.Linear(kInter, kHidden, true), in.Linear(kInter, kHidden, true),
                       in.Linear(kHidden, kInter, true)});
  }
  std::vector<RankTokens> tokens(world);
  for (int r = 0; r < world; ++r) {
    const int64_t t = c.tokens[r];
    tokens[r].x = in.Values(t * kHidden, 2.0f);
    tokens[r].ids = ::dsv3::testing::RandomRouting(t, kTopK, kExperts, rng);
    tokens[r].weights = in.Values(t * kTopK);
  }

  GlooGroup group(world);
  for (const auto& comm : group.comms) ASSERT_NE(comm, nullptr);
  // out[layout][rank]: [T, H]; host_calls[layout][rank].
  std::vector<std::vector<float>> out[2];
  std::vector<int> host_calls[2];
  for (int which = 0; which < 2; ++which) {
    const DispatchLayout layout =
        which == 0 ? DispatchLayout::kCompacted : DispatchLayout::kFixedCapacity;
    out[which].assign(world, {});
    host_calls[which].assign(world, 0);
    group.OnEveryRank([&](int r) {
      CpuBackend cpu(1);
      HostTrafficBackend backend(cpu);
      RankTokens& mine = tokens[r];
      const int64_t t = mine.t();
      out[which][r].assign(t * kHidden, NAN);  // every element must be written
      const ExpertParallelMoeArgs args{
          .x = TensorView::Contiguous(mine.x.data(), DType::kF32, {t, kHidden}),
          .topk_ids = TensorView::Contiguous(mine.ids.data(), DType::kI32, {t, kTopK}),
          .topk_weights = TensorView::Contiguous(mine.weights.data(), DType::kF32, {t, kTopK}),
          .experts = std::span<const ExpertWeights>(experts).subspan(r * local, local),
          .expert_begin = r * local,
          .num_experts = kExperts,
          .layout = layout,
          .capacity = capacity};
      const absl::Status st = ExpertParallelMoe(
          backend, *group.comms[r], args,
          TensorView::Contiguous(out[which][r].data(), DType::kF32, {t, kHidden}));
      EXPECT_TRUE(st.ok()) << "rank " << r << ": " << st;
      host_calls[which][r] = backend.calls;
    });
  }

  CpuBackend reference(1);
  for (int r = 0; r < world; ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    const std::vector<float>& compacted = out[0][r];
    const std::vector<float>& fixed = out[1][r];
    ASSERT_EQ(fixed.size(), compacted.size());
    int64_t differing = 0;
    for (size_t i = 0; i < fixed.size(); ++i) {
      differing += std::memcmp(&fixed[i], &compacted[i], sizeof(float)) != 0;
    }
    EXPECT_EQ(differing, 0) << "of " << fixed.size();
    // Both against one rank holding every expert.
    const int64_t t = tokens[r].t();
    std::vector<float> want(t * kHidden);
    reference.MoeExperts(TensorView::Contiguous(tokens[r].x.data(), DType::kF32, {t, kHidden}),
                         TensorView::Contiguous(tokens[r].ids.data(), DType::kI32, {t, kTopK}),
                         TensorView::Contiguous(tokens[r].weights.data(), DType::kF32,
                                                {t, kTopK}),
                         experts, 0, TensorView::Contiguous(want.data(), DType::kF32,
                                                            {t, kHidden}));
    EXPECT_LT(::dsv3::testing::OpRelError(fixed, want), 1e-5);
    EXPECT_EQ(host_calls[1][r], 0) << "the fixed-capacity layout touched the host";
    if (world > 1) {
      EXPECT_GT(host_calls[0][r], 0) << "the counter misses the compacted layout";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Spreads, ExpertParallelLayoutsTest,
    ::testing::Values(Case{"two_ranks_uneven", {5, 2}},
                      Case{"two_ranks_one_idle", {0, 4}},
                      Case{"two_ranks_spare_capacity", {3, 1}, 4},
                      Case{"four_ranks_uneven_one_idle", {1, 0, 7, 3}},
                      Case{"four_ranks_even", {4, 4, 4, 4}},
                      Case{"four_ranks_all_idle", {0, 0, 0, 0}}),
    [](const auto& info) { return info.param.name; });

TEST(ChooseDispatchLayoutTest, FixedCapacityUpToTheThresholdWhenTheCapacityIsKnown) {
  const struct {
    int64_t capacity;
    DispatchLayout want;
  } table[] = {
      {-1, DispatchLayout::kCompacted},  // a batch not split by rank
      {0, DispatchLayout::kFixedCapacity},
      {1, DispatchLayout::kFixedCapacity},
      {kFixedCapacityMaxTokens, DispatchLayout::kFixedCapacity},
      {kFixedCapacityMaxTokens + 1, DispatchLayout::kCompacted},
  };
  for (const auto& row : table) {
    EXPECT_EQ(ChooseDispatchLayout(row.capacity), row.want) << "capacity " << row.capacity;
  }
}

}  // namespace
}  // namespace dsv3::engine_expert_parallel_moe_test
