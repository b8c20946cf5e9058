// dsv3-server --tp 2 --dp-attention on the CPU: concurrent streams, which rank 0 spreads over
// the two attention ranks, each give the ids TP=1 gives (with MTP speculative decoding too),
// and the server reports its size.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/server_process.h"

namespace dsv3::server_dp_attention_test {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::GreedyIds;
using ::dsv3::testing::ReadGenerate;
using ::dsv3::testing::ServerProcess;
using ::dsv3::testing::StreamResult;

const std::vector<std::vector<int32_t>> kPrompts = {
    {0, 17, 99, 512, 3, 250, 7, 1000, 42}, {5, 6, 7}, {900, 901, 902, 903, 904, 905}, {64, 65}};

// Every prompt at once, one stream each.
std::vector<StreamResult> GenerateAll(ServerProcess& server, int max_tokens) {
  std::vector<StreamResult> results(kPrompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    threads.emplace_back([&, i] {
      auto stub = server.Stub();
      results[i] = ReadGenerate(*stub, GreedyIds(kPrompts[i], max_tokens));
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

// Every prompt's ids from `server` equal those of `one_rank`, 24 of them.
void ExpectSameIdsAsOneRank(ServerProcess& one_rank, ServerProcess& server) {
  ASSERT_TRUE(one_rank.WaitServing()) << one_rank.log();
  ASSERT_TRUE(server.WaitServing()) << server.log();
  const std::vector<StreamResult> one = GenerateAll(one_rank, 24);
  const std::vector<StreamResult> two = GenerateAll(server, 24);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    ASSERT_TRUE(one[i].status.ok()) << one[i].status.error_message();
    ASSERT_TRUE(two[i].status.ok()) << two[i].status.error_message() << server.log();
    EXPECT_EQ(two[i].ids.size(), 24u) << "prompt " << i;
    EXPECT_EQ(two[i].ids, one[i].ids) << "prompt " << i;
  }
  EXPECT_NE(server.log().find("on each of 2 attention ranks"), std::string::npos)
      << server.log();
}

TEST(ServerDpAttentionTest, ConcurrentStreamsMatchOneRank) {
  const std::string model = "--model=" + FixturePath("tiny-fp8");
  ServerProcess tp1({model});
  ServerProcess dp({model, "--tp=2", "--dp-attention"});
  ExpectSameIdsAsOneRank(tp1, dp);

  auto stub = dp.Stub();
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.tensor_parallel_size(), 2);
}

// With MTP speculative decoding on each attention rank: the ids of one rank without it.
TEST(ServerDpAttentionTest, SpeculativeConcurrentStreamsMatchOneRankWithout) {
  const std::string model = "--model=" + FixturePath("tiny-fp8");
  ServerProcess tp1({model});
  ServerProcess dp({model, "--tp=2", "--dp-attention", "--speculative-tokens=2"});
  ExpectSameIdsAsOneRank(tp1, dp);
}

}  // namespace
}  // namespace dsv3::server_dp_attention_test
