// ParallelConfig from the launch flags and the launcher environment: the three launch modes, the
// rank arithmetic of a per-node launch (global rank = node rank * ranks per node + local rank),
// and errors that name the flag or variable at fault.
#include <gtest/gtest.h>

#include <map>

#include "engine/parallel/parallel_config.h"

namespace dsv3::parallel_config_test {
namespace {

using Env = std::map<std::string, std::string>;

absl::StatusOr<ParallelConfig> From(int tp, const NodeLaunchFlags& flags, const Env& env) {
  return ParallelConfigFrom(tp, flags, absl::Seconds(60),
                            [&](const std::string& name) -> std::optional<std::string> {
                              auto it = env.find(name);
                              if (it == env.end()) return std::nullopt;
                              return it->second;
                            });
}

absl::StatusOr<ParallelConfig> From(int tp, const Env& env) { return From(tp, {}, env); }

// --nnodes, --node-rank, --dist-init-addr; 0, -1 and "" stand for "not given".
NodeLaunchFlags Flags(int nnodes = 0, int node_rank = -1, std::string dist_init_addr = "") {
  return {.nnodes = nnodes, .node_rank = node_rank, .dist_init_addr = std::move(dist_init_addr)};
}

TEST(ParallelConfigTest, TpWithoutRankSpawnsWorkersOnThisHost) {
  auto c = From(4, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->world_size, 4);
  EXPECT_EQ(c->rank, 0);
  EXPECT_EQ(c->node_ranks, 4);
  EXPECT_TRUE(c->spawn_workers());
  EXPECT_TRUE(c->leader());
  EXPECT_EQ(c->master_addr, "127.0.0.1");
  EXPECT_EQ(c->master_port, 0);
  auto single = From(1, {});
  ASSERT_TRUE(single.ok());
  EXPECT_FALSE(single->spawn_workers());
}

TEST(ParallelConfigTest, ExternalLaunchReadsTheEnvironment) {
  auto c = From(1, {{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "leader.svc"},
                    {"MASTER_PORT", "29500"}, {"LOCAL_RANK", "1"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rank, 3);
  EXPECT_EQ(c->world_size, 4);
  EXPECT_EQ(c->local_rank, 1);
  EXPECT_EQ(c->master_addr, "leader.svc");
  EXPECT_EQ(c->master_port, 29500);
  EXPECT_FALSE(c->spawn_workers());
  EXPECT_FALSE(c->leader());
  // --tp may repeat WORLD_SIZE.
  EXPECT_TRUE(From(4, {{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "a"},
                       {"MASTER_PORT", "1"}}).ok());
}

// One process per node: the node's local rank 0 and how many ranks it starts.
TEST(ParallelConfigTest, PerNodeLaunchRankArithmetic) {
  struct Case {
    const char* what;
    int tp;
    NodeLaunchFlags flags;
    Env env;
    int rank;
    int node_ranks;
    std::string master_addr;
    int master_port;
  };
  const Case cases[] = {
      {"node 0 of 2", 16, Flags(2, 0, "leader:29500"), {}, 0, 8, "leader", 29500},
      {"node 1 of 2", 16, Flags(2, 1, "leader:29500"), {}, 8, 8, "leader", 29500},
      {"node 2 of 3", 12, Flags(3, 2, "leader:29500"), {}, 8, 4, "leader", 29500},
      {"one rank per node", 2, Flags(2, 1, "leader:29500"), {}, 1, 1, "leader", 29500},
      {"the environment", 16, {},
       {{"NNODES", "2"}, {"NODE_RANK", "1"}, {"MASTER_ADDR", "leader"}, {"MASTER_PORT", "1234"}},
       8, 8, "leader", 1234},
      {"flags and environment agree", 16, Flags(2, 1, "leader:1234"),
       {{"NNODES", "2"}, {"NODE_RANK", "1"}, {"MASTER_ADDR", "leader"}, {"MASTER_PORT", "1234"}},
       8, 8, "leader", 1234},
      {"--nnodes 1 needs no address", 8, Flags(1, -1, ""), {}, 0, 8, "127.0.0.1", 0},
      {"one node with an address", 8, Flags(1, 0, "10.0.0.1:29500"), {}, 0, 8, "10.0.0.1", 29500},
      {"an IPv6 address", 8, Flags(2, 1, "[fd00::1]:29500"), {}, 4, 4, "fd00::1", 29500},
  };
  for (const Case& c : cases) {
    auto config = From(c.tp, c.flags, c.env);
    ASSERT_TRUE(config.ok()) << c.what << ": " << config.status();
    EXPECT_EQ(config->world_size, c.tp) << c.what;
    EXPECT_EQ(config->rank, c.rank) << c.what;
    EXPECT_EQ(config->local_rank, 0) << c.what;
    EXPECT_EQ(config->node_ranks, c.node_ranks) << c.what;
    EXPECT_EQ(config->spawn_workers(), c.node_ranks > 1) << c.what;
    EXPECT_EQ(config->master_addr, c.master_addr) << c.what;
    EXPECT_EQ(config->master_port, c.master_port) << c.what;
  }
}

// A worker spawned by node 1's process repeats its parent's flags and gets RANK, WORLD_SIZE,
// LOCAL_RANK and the store's address in its environment.
TEST(ParallelConfigTest, SpawnedWorkerOfANodeIsOneRank) {
  auto c = From(16, Flags(2, 1, "leader:29500"),
                {{"RANK", "9"}, {"WORLD_SIZE", "16"}, {"LOCAL_RANK", "1"},
                 {"MASTER_ADDR", "leader"}, {"MASTER_PORT", "29500"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rank, 9);
  EXPECT_EQ(c->local_rank, 1);
  EXPECT_EQ(c->node_ranks, 1);
  EXPECT_FALSE(c->spawn_workers());
  EXPECT_EQ(c->master_addr, "leader");
}

TEST(ParallelConfigTest, ErrorsNameTheFlagOrVariable) {
  const Env good = {
      {"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  const Env node_env = {
      {"NNODES", "2"}, {"NODE_RANK", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  const Env worker = {{"RANK", "9"}, {"WORLD_SIZE", "16"}, {"LOCAL_RANK", "1"},
                      {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  auto with = [](Env env, const std::string& k, const std::string& v) {
    env[k] = v;
    return env;
  };
  auto without = [](Env env, const std::string& k) {
    env.erase(k);
    return env;
  };
  struct Case {
    int tp;
    NodeLaunchFlags flags;
    Env env;
    std::string names;
  };
  const NodeLaunchFlags none = Flags();
  const Case cases[] = {
      // One process per rank.
      {0, none, {}, "--tp 0"},
      {1, none, {{"WORLD_SIZE", "2"}}, "WORLD_SIZE is set but RANK is not"},
      {1, none, with(good, "RANK", "2"), "RANK='2'"},
      {1, none, with(good, "RANK", "x"), "RANK='x'"},
      {1, none, without(good, "WORLD_SIZE"), "WORLD_SIZE=<unset>"},
      {1, none, without(good, "MASTER_ADDR"), "MASTER_ADDR is not set"},
      {1, none, without(without(good, "MASTER_ADDR"), "MASTER_PORT"), "MASTER_ADDR is not set"},
      {1, none, with(good, "MASTER_PORT", "70000"), "MASTER_PORT='70000'"},
      {1, none, without(good, "MASTER_PORT"), "MASTER_PORT=<unset>"},
      {1, none, with(good, "LOCAL_RANK", "-1"), "LOCAL_RANK='-1'"},
      {4, none, good, "--tp 4 disagrees with WORLD_SIZE=2"},
      // One process per node.
      {6, Flags(4, 0, "h:1"), {}, "--tp 6 is not divisible by --nnodes 4"},
      {1, Flags(2, 0, "h:1"), {}, "--tp 1 is not divisible by --nnodes 2"},
      {16, Flags(2, 2, "h:1"), {}, "--node-rank 2 is out of range: --nnodes 2"},
      {16, none, with(node_env, "NODE_RANK", "5"), "NODE_RANK=5 is out of range: NNODES=2"},
      {16, Flags(-1, 1, "h:1"), {}, "--node-rank 1 is out of range: --nnodes 1"},
      {16, Flags(2, -1, "h:1"), {}, "--nnodes 2 needs --node-rank"},
      {16, Flags(2, 1, ""), {}, "--nnodes 2 needs --dist-init-addr"},
      {16, none, without(without(node_env, "MASTER_ADDR"), "MASTER_PORT"),
       "NNODES=2 needs --dist-init-addr"},
      {16, Flags(4, -1, ""), node_env, "--nnodes 4 disagrees with NNODES=2"},
      {16, Flags(-1, 0, ""), node_env, "--node-rank 0 disagrees with NODE_RANK=1"},
      {16, Flags(-1, -1, "other:29500"), node_env,
       "--dist-init-addr other:29500 disagrees with MASTER_ADDR=h MASTER_PORT=29500"},
      {16, Flags(-1, -1, "h:29501"), node_env, "--dist-init-addr h:29501 disagrees"},
      {16, none, with(node_env, "NNODES", "x"), "NNODES='x'"},
      {16, none, with(node_env, "NNODES", "0"), "NNODES='0'"},
      {16, none, with(node_env, "NODE_RANK", "-1"), "NODE_RANK='-1'"},
      {8, Flags(2, 0, "leader"), {}, "--dist-init-addr 'leader' must be HOST:PORT"},
      {8, Flags(2, 0, "leader:0"), {}, "--dist-init-addr 'leader:0' must be HOST:PORT"},
      {8, Flags(2, 0, "leader:x"), {}, "--dist-init-addr 'leader:x'"},
      {8, Flags(2, 0, ":29500"), {}, "--dist-init-addr ':29500'"},
      {8, Flags(2, 0, "[]:29500"), {}, "--dist-init-addr '[]:29500'"},
      {8, none, {{"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}},
       "MASTER_ADDR and MASTER_PORT are set but neither RANK nor NNODES is"},
      {8, none, {{"MASTER_PORT", "1"}}, "MASTER_ADDR is not set but MASTER_PORT is"},
      // A spawned worker whose flags put it on another node.
      {16, Flags(2, 0, "h:29500"), worker,
       "RANK=9 is on node 1 (8 ranks per node with --nnodes 2), not --node-rank 0"},
      {16, Flags(2, 1, "h:29500"), with(worker, "LOCAL_RANK", "2"),
       "LOCAL_RANK=2 disagrees with RANK=9: that is local rank 1 of node 1"},
      {16, Flags(3, 1, "h:29500"), worker, "WORLD_SIZE=16 is not divisible by --nnodes 3"},
      {16, Flags(2, 1, "h:29501"), worker, "--dist-init-addr h:29501 disagrees with MASTER_ADDR=h"},
  };
  for (const Case& c : cases) {
    auto config = From(c.tp, c.flags, c.env);
    ASSERT_FALSE(config.ok()) << c.names;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.names;
    EXPECT_NE(config.status().message().find(c.names), std::string::npos)
        << "want '" << c.names << "' in: " << config.status();
  }
}

}  // namespace
}  // namespace dsv3::parallel_config_test
