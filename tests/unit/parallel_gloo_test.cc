// GlooCommunicator across 2 and 4 ranks on loopback (one thread per rank, one store), and the
// failure cases: a rank that never joins, a peer that disappears, a peer that hangs.
#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/parallel/gloo_communicator.h"
#include "engine/parallel/tcp_store.h"

namespace dsv3::parallel_gloo_test {
namespace {

struct Group {
  std::unique_ptr<TcpStore> server;
  std::vector<std::unique_ptr<TcpStore>> clients;  // ranks 1..n-1
  std::vector<std::unique_ptr<GlooCommunicator>> comms;
};

TcpStore& StoreOf(Group& g, int rank) { return rank == 0 ? *g.server : *g.clients[rank - 1]; }

// Creates `n` communicators concurrently (rendezvous needs every rank at once).
Group MakeGroup(int n, absl::Duration timeout = absl::Seconds(10)) {
  Group g;
  g.server = *TcpStore::Create({.host = "127.0.0.1", .port = 0, .is_server = true});
  for (int r = 1; r < n; ++r) {
    g.clients.push_back(*TcpStore::Create({.host = "127.0.0.1", .port = g.server->port()}));
  }
  g.comms.resize(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto comm = GlooCommunicator::Create(
          StoreOf(g, r), {.rank = r, .world_size = n, .timeout = timeout,
                          .rendezvous_timeout = absl::Seconds(10)});
      ASSERT_TRUE(comm.ok()) << comm.status();
      g.comms[r] = *std::move(comm);
    });
  }
  for (auto& t : threads) t.join();
  return g;
}

// Runs fn(rank) on every rank at once.
void OnEveryRank(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

class GlooCollectivesTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooCollectivesTest, AllReduceAllGatherBroadcastBarrier) {
  const int n = GetParam();
  Group g = MakeGroup(n);
  ASSERT_EQ(g.comms.size(), static_cast<size_t>(n));
  for (auto& c : g.comms) ASSERT_NE(c, nullptr);
  OnEveryRank(n, [&](int r) {
    Communicator& comm = *g.comms[r];
    EXPECT_EQ(comm.rank(), r);
    EXPECT_EQ(comm.world_size(), n);

    // [3, 5]: element i of rank r is r * 100 + i.
    std::vector<float> x(15);
    for (int i = 0; i < 15; ++i) x[i] = static_cast<float>(r * 100 + i);
    ASSERT_TRUE(comm.AllReduceSum(TensorView::Contiguous(x.data(), DType::kF32, {3, 5})).ok());
    for (int i = 0; i < 15; ++i) {
      EXPECT_FLOAT_EQ(x[i], static_cast<float>(100 * n * (n - 1) / 2 + n * i));
    }

    std::vector<int32_t> in = {r, 10 * r};
    std::vector<int32_t> out(2 * n, -1);
    ASSERT_TRUE(comm.AllGather(TensorView::Contiguous(in.data(), DType::kI32, {1, 2}),
                               TensorView::Contiguous(out.data(), DType::kI32, {n, 2}))
                    .ok());
    for (int k = 0; k < n; ++k) {
      EXPECT_EQ(out[2 * k], k);
      EXPECT_EQ(out[2 * k + 1], 10 * k);
    }

    // Sizes differ before the call; the root's bytes win, from any root.
    for (int root : {0, n - 1}) {
      std::string bytes = r == root ? absl::StrCat("plan from ", root, std::string(1 << 16, 'p'))
                                    : std::string(r + 3, 'z');
      ASSERT_TRUE(comm.Broadcast(bytes, root).ok());
      EXPECT_EQ(bytes, absl::StrCat("plan from ", root, std::string(1 << 16, 'p')));
    }
    std::string empty = r == 0 ? "" : "stale";
    ASSERT_TRUE(comm.Broadcast(empty, 0).ok());
    EXPECT_EQ(empty, "");

    ASSERT_TRUE(comm.Barrier().ok());
    ASSERT_TRUE(comm.StartupBarrier(absl::Seconds(5)).ok());
    EXPECT_TRUE(g.comms[r]->status().ok());
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, GlooCollectivesTest, ::testing::Values(2, 4),
                         [](const auto& info) { return absl::StrCat(info.param, "Ranks"); });

// Rank s sends (s + d) % 3 rows to rank d (so some pairs exchange nothing), and the last rank
// sends nothing at all; row i from s to d holds [s, d, i] as I32 so every row says where it came
// from. Each rank must receive exactly the rows addressed to it, grouped by source in rank order.
TEST_P(GlooCollectivesTest, AllToAllVDeliversEachRanksRowsInRankOrder) {
  const int n = GetParam();
  Group g = MakeGroup(n);
  const auto rows_between = [n](int s, int d) -> int64_t { return s == n - 1 ? 0 : (s + d) % 3; };
  OnEveryRank(n, [&](int r) {
    std::vector<int64_t> send_rows(n), recv_rows(n);
    std::vector<int32_t> send;
    for (int d = 0; d < n; ++d) {
      send_rows[d] = rows_between(r, d);
      recv_rows[d] = rows_between(d, r);
      for (int64_t i = 0; i < send_rows[d]; ++i) {
        send.insert(send.end(), {r, d, static_cast<int32_t>(i)});
      }
    }
    const int64_t out_rows = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
    std::vector<int32_t> recv(out_rows * 3, -1);
    const int64_t in_rows = static_cast<int64_t>(send.size()) / 3;
    ASSERT_TRUE(g.comms[r]
                    ->AllToAllV(TensorView::Contiguous(send.data(), DType::kI32, {in_rows, 3}),
                                send_rows,
                                TensorView::Contiguous(recv.data(), DType::kI32, {out_rows, 3}),
                                recv_rows)
                    .ok());
    std::vector<int32_t> expected;
    for (int s = 0; s < n; ++s) {
      for (int64_t i = 0; i < recv_rows[s]; ++i) {
        expected.insert(expected.end(), {s, r, static_cast<int32_t>(i)});
      }
    }
    EXPECT_EQ(recv, expected) << "rank " << r;
  });
}

TEST(GlooCommunicatorTest, AllToAllVRejectsCountsThatDoNotMatchTheTensors) {
  Group g = MakeGroup(1);
  std::vector<float> x(6);
  const TensorView rows3 = TensorView::Contiguous(x.data(), DType::kF32, {3, 2});
  std::vector<float> y(6);
  const TensorView out3 = TensorView::Contiguous(y.data(), DType::kF32, {3, 2});
  const int64_t three[] = {3}, two[] = {2};
  absl::Status st = g.comms[0]->AllToAllV(rows3, two, out3, three);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("do not add up"), std::string::npos) << st;
  const int64_t per_rank[] = {3, 0};
  EXPECT_EQ(g.comms[0]->AllToAllV(rows3, per_rank, out3, three).code(),
            absl::StatusCode::kInvalidArgument);
  x = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(g.comms[0]->AllToAllV(rows3, three, out3, three).ok());
  EXPECT_EQ(y, x);
}

TEST(GlooCommunicatorTest, RejectsDeviceAndNonF32AllReduce) {
  float x = 1;
  Group g = MakeGroup(1);
  Communicator& comm = *g.comms[0];
  EXPECT_EQ(comm.AllReduceSum(TensorView::Contiguous(&x, DType::kF32, {1}, Device::kCuda)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.AllReduceSum(TensorView::Contiguous(&x, DType::kI32, {1})).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(comm.AllReduceSum(TensorView::Contiguous(&x, DType::kF32, {1})).ok());
  EXPECT_EQ(x, 1);
}

TEST(GlooCommunicatorTest, RankThatNeverJoinsFailsRendezvousWithinTheTimeout) {
  auto server = *TcpStore::Create({.host = "127.0.0.1", .port = 0, .is_server = true});
  auto client = *TcpStore::Create({.host = "127.0.0.1", .port = server->port()});
  const absl::Time start = absl::Now();
  absl::Status statuses[2];
  OnEveryRank(2, [&](int r) {
    // World size 3: rank 2 never comes.
    auto comm = GlooCommunicator::Create(
        r == 0 ? *server : *client,
        {.rank = r, .world_size = 3, .rendezvous_timeout = absl::Milliseconds(700)});
    statuses[r] = comm.status();
  });
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Seconds(5));
  for (const absl::Status& st : statuses) {
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("'gloo/2'"), std::string::npos) << st;
    EXPECT_NE(st.message().find("MASTER_ADDR:MASTER_PORT"), std::string::npos) << st;
  }
}

TEST(GlooCommunicatorTest, PeerThatDisappearsFailsTheCollectivePromptly) {
  Group g = MakeGroup(2, /*timeout=*/absl::Seconds(30));
  std::thread dying([&] {
    absl::SleepFor(absl::Milliseconds(200));
    g.comms[1].reset();  // closes rank 1's sockets, as the kernel does when a process dies
  });
  std::vector<float> x(4, 1.0f);
  const absl::Time start = absl::Now();
  absl::Status st = g.comms[0]->AllReduceSum(TensorView::Contiguous(x.data(), DType::kF32, {4}));
  dying.join();
  EXPECT_FALSE(st.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << "waited for the timeout, not the socket";
  // Poisoned: the next collective fails at once with the same error.
  EXPECT_EQ(g.comms[0]->Barrier(), st);
  EXPECT_EQ(g.comms[0]->status(), st);
}

TEST(GlooCommunicatorTest, PeerThatHangsFailsTheCollectiveAtTheTimeout) {
  Group g = MakeGroup(2, /*timeout=*/absl::Milliseconds(500));
  std::string bytes;
  const absl::Time start = absl::Now();
  // Rank 1 is alive but never calls the collective.
  absl::Status st = g.comms[0]->Broadcast(bytes, 1);
  const absl::Duration took = absl::Now() - start;
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_GE(took, absl::Milliseconds(450));
  EXPECT_LT(took, absl::Seconds(5));
}

}  // namespace
}  // namespace dsv3::parallel_gloo_test
