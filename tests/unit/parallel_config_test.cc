// ParallelConfig from --tp and the launcher environment: the two launch modes, and errors that
// name the variable at fault.
#include <gtest/gtest.h>

#include <map>

#include "engine/parallel/parallel_config.h"

namespace dsv3 {
namespace {

absl::StatusOr<ParallelConfig> From(int tp, const std::map<std::string, std::string>& env) {
  return ParallelConfigFrom(tp, absl::Seconds(60),
                            [&](const std::string& name) -> std::optional<std::string> {
                              auto it = env.find(name);
                              if (it == env.end()) return std::nullopt;
                              return it->second;
                            });
}

TEST(ParallelConfigTest, TpWithoutRankSpawnsWorkersOnThisHost) {
  auto c = From(4, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->world_size, 4);
  EXPECT_EQ(c->rank, 0);
  EXPECT_TRUE(c->spawn_workers);
  EXPECT_TRUE(c->leader());
  auto single = From(1, {});
  ASSERT_TRUE(single.ok());
  EXPECT_FALSE(single->spawn_workers);
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
  EXPECT_FALSE(c->spawn_workers);
  EXPECT_FALSE(c->leader());
  // --tp may repeat WORLD_SIZE.
  EXPECT_TRUE(From(4, {{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "a"},
                       {"MASTER_PORT", "1"}}).ok());
}

TEST(ParallelConfigTest, ErrorsNameTheVariable) {
  const std::map<std::string, std::string> good = {
      {"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  struct Case {
    int tp;
    std::map<std::string, std::string> env;
    std::string names;
  };
  auto with = [&](const std::string& k, const std::string& v) {
    auto env = good;
    env[k] = v;
    return env;
  };
  auto without = [&](const std::string& k) {
    auto env = good;
    env.erase(k);
    return env;
  };
  const Case cases[] = {
      {0, {}, "--tp 0"},
      {1, {{"WORLD_SIZE", "2"}}, "WORLD_SIZE is set but RANK is not"},
      {1, with("RANK", "2"), "RANK='2'"},
      {1, with("RANK", "x"), "RANK='x'"},
      {1, without("WORLD_SIZE"), "WORLD_SIZE=<unset>"},
      {1, without("MASTER_ADDR"), "MASTER_ADDR"},
      {1, with("MASTER_PORT", "70000"), "MASTER_PORT='70000'"},
      {1, without("MASTER_PORT"), "MASTER_PORT=<unset>"},
      {1, with("LOCAL_RANK", "-1"), "LOCAL_RANK='-1'"},
      {4, good, "--tp 4 disagrees with WORLD_SIZE=2"},
  };
  for (const Case& c : cases) {
    auto config = From(c.tp, c.env);
    ASSERT_FALSE(config.ok()) << c.names;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(config.status().message().find(c.names), std::string::npos) << config.status();
  }
}

}  // namespace
}  // namespace dsv3
