// Tensor-parallel sharding of the model on the CPU: N ranks as N threads of one process, each
// holding its shard, joined by an in-memory communicator. Their logits must equal one rank's
// (within float32 reordering of the sums) and their greedy tokens must be identical.
// The process-level collectives (gloo over TCP) are tested in tests/unit/parallel_*.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/model/model.h"
#include "tests/fixture_reference.h"
#include "tests/test_util.h"

namespace dsv3::tensor_parallel_test {
namespace {

using ::dsv3::testing::FixturePath;

// The state the ranks of one in-memory group share.
struct Group {
  explicit Group(int n) : world(n), barrier(n), slots(n), send_rows(n) {}
  int world;
  std::barrier<> barrier;
  std::vector<std::vector<char>> slots;
  std::vector<std::vector<int64_t>> send_rows;  // AllToAllV: each rank's counts
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(Group& group, int rank) : g_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return g_.world; }

  absl::Status AllReduceSum(const TensorView& data) override {
    Publish(data.data, data.nbytes());
    float* out = data.ptr<float>();
    std::fill(out, out + data.numel(), 0.0f);
    for (int r = 0; r < g_.world; ++r) {  // every rank sums in rank order: identical results
      const float* in = reinterpret_cast<const float*>(g_.slots[r].data());
      for (int64_t i = 0; i < data.numel(); ++i) out[i] += in[i];
    }
    g_.barrier.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status AllGather(const TensorView& in, const TensorView& out) override {
    Publish(in.data, in.nbytes());
    for (int r = 0; r < g_.world; ++r) {
      std::memcpy(static_cast<char*>(out.data) + r * in.nbytes(), g_.slots[r].data(), in.nbytes());
    }
    g_.barrier.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status AllToAllV(const TensorView& send, std::span<const int64_t> send_rows,
                         const TensorView& recv, std::span<const int64_t> recv_rows) override {
    // Each rank publishes its whole send buffer; rank r reads, from each source s, the slice s
    // addressed to r (which starts after what s sends to ranks before r).
    const int64_t row_bytes = RowBytes(send);
    g_.send_rows[rank_].assign(send_rows.begin(), send_rows.end());
    Publish(send.data, send.nbytes());
    char* out = static_cast<char*>(recv.data);
    for (int s = 0; s < g_.world; ++s) {
      int64_t begin = 0;
      for (int d = 0; d < rank_; ++d) begin += g_.send_rows[s][d];
      std::memcpy(out, g_.slots[s].data() + begin * row_bytes, recv_rows[s] * row_bytes);
      out += recv_rows[s] * row_bytes;
    }
    g_.barrier.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status Broadcast(std::string& bytes, int root) override {
    Publish(bytes.data(), rank_ == root ? bytes.size() : 0);
    bytes.assign(g_.slots[root].begin(), g_.slots[root].end());
    g_.barrier.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status Barrier() override {
    g_.barrier.arrive_and_wait();
    return absl::OkStatus();
  }

 private:
  void Publish(const void* data, size_t bytes) {
    g_.slots[rank_].assign(static_cast<const char*>(data), static_cast<const char*>(data) + bytes);
    g_.barrier.arrive_and_wait();
  }

  Group& g_;
  int rank_;
};

using Reference = ::dsv3::testing::FixtureReference;
using ::dsv3::testing::LoadFixtureReference;
using ::dsv3::testing::RelativeError;

struct RankOutput {
  std::vector<std::vector<float>> prefill_logits;  // per prompt, [T, V]
  std::vector<std::vector<int32_t>> greedy;        // per prompt
};

// Rank 0's choice of the next token, on every rank (as the engine's plan broadcast carries it).
int32_t ShareToken(Communicator& comm, int32_t token) {
  std::string bytes(reinterpret_cast<const char*>(&token), sizeof(token));
  EXPECT_TRUE(comm.Broadcast(bytes, 0).ok());
  std::memcpy(&token, bytes.data(), sizeof(token));
  return token;
}

// One rank: prefill every prompt (all rows' logits; only rank 0 gets them), then greedy-decode
// it with rank 0's tokens.
RankOutput RunRank(const std::string& model_dir, Communicator& comm, const Reference& ref) {
  RankOutput out;
  CpuBackend backend(1);
  auto model = DeepseekV3Model::Load(model_dir, backend, comm);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return out;
  const int64_t vocab = (*model)->config().vocab_size;
  for (const auto& prompt : ref.prompts) {
    const int32_t n = static_cast<int32_t>(prompt.size());
    const int32_t blocks = (n + ref.max_new_tokens + 15) / 16;
    KvCache cache(backend, (*model)->config(), blocks, 16);
    std::vector<int32_t> table(blocks);
    for (int32_t b = 0; b < blocks; ++b) table[b] = b;
    ForwardBatch batch;
    batch.token_ids = prompt;
    batch.sequences.push_back({0, n, 0, table});
    for (int32_t r = 0; r < n; ++r) batch.logits_rows.push_back(r);
    std::vector<float> logits;
    EXPECT_TRUE((*model)->Forward(batch, cache, logits).ok());
    out.prefill_logits.push_back(logits);
    std::vector<int32_t> generated;
    int32_t next = -1;
    if (comm.rank() == 0) {
      const float* last = logits.data() + (n - 1) * vocab;
      next = static_cast<int32_t>(std::max_element(last, last + vocab) - last);
    }
    next = ShareToken(comm, next);
    for (int32_t pos = n; static_cast<int>(generated.size()) < ref.max_new_tokens; ++pos) {
      generated.push_back(next);
      if (next == 1) break;  // EOS of the fixtures
      ForwardBatch step;
      step.token_ids = {next};
      step.sequences.push_back({0, 1, pos, table});
      step.logits_rows = {0};
      EXPECT_TRUE((*model)->Forward(step, cache, logits).ok());
      if (comm.rank() == 0) {
        next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) -
                                    logits.begin());
      }
      next = ShareToken(comm, next);
    }
    out.greedy.push_back(generated);
  }
  return out;
}

std::vector<RankOutput> RunGroup(const std::string& model_dir, int world, const Reference& ref) {
  Group group(world);
  std::vector<RankOutput> outputs(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(group, r);
      outputs[r] = RunRank(model_dir, comm, ref);
    });
  }
  for (auto& t : threads) t.join();
  return outputs;
}


struct Case {
  std::string fixture;
  int world;
};

class TensorParallelTest : public ::testing::TestWithParam<Case> {};

TEST_P(TensorParallelTest, ShardedLogitsAndGreedyTokensEqualOneRank) {
  const auto [fixture, world] = GetParam();
  const std::string dir = FixturePath(fixture);
  const Reference ref = LoadFixtureReference(fixture.substr(0, fixture.rfind('-')));
  const RankOutput single = RunGroup(dir, 1, ref)[0];
  const std::vector<RankOutput> ranks = RunGroup(dir, world, ref);
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(ranks[r].prefill_logits.size(), ref.prompts.size()) << "rank " << r;
    for (size_t p = 0; p < ref.prompts.size(); ++p) {
      if (r == 0) {
        EXPECT_LT(RelativeError(ranks[r].prefill_logits[p], single.prefill_logits[p]), 1e-4)
            << "prompt " << p;
      } else {
        // Only rank 0 samples: workers skip the head's download and interleave.
        EXPECT_TRUE(ranks[r].prefill_logits[p].empty()) << "rank " << r << " prompt " << p;
      }
      EXPECT_EQ(ranks[r].greedy[p], single.greedy[p]) << "rank " << r << " prompt " << p;
    }
  }
  // And one rank is itself transformers' greedy output.
  for (size_t p = 0; p < ref.prompts.size(); ++p) EXPECT_EQ(single.greedy[p], ref.continuations[p]);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TensorParallelTest,
                         ::testing::Values(Case{"tiny-fp8", 2}, Case{"tiny-fp8", 4},
                                           Case{"tiny-bf16", 4}, Case{"noqlora-fp8", 2}),
                         [](const auto& info) {
                           std::string name = info.param.fixture + "_tp" +
                                              std::to_string(info.param.world);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(TensorParallelConfigTest, IndivisibleHeadsAreRejectedByName) {
  Group group(2);
  std::vector<absl::Status> statuses(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(group, r);
      CpuBackend backend(1);
      statuses[r] = DeepseekV3Model::Load(FixturePath("ragged-fp8"), backend, comm).status();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : statuses) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(s.message()).find("num_attention_heads"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace dsv3::tensor_parallel_test
