// TcpStore: rank 0 serves, the others connect; waits are bounded and their errors name the key,
// the store address and the timeout.
#include <gtest/gtest.h>

#include <thread>

#include "absl/time/clock.h"
#include "engine/parallel/socket_io.h"
#include "engine/parallel/tcp_store.h"

namespace dsv3::parallel_tcp_store_test {
namespace {

std::unique_ptr<TcpStore> Server() {
  auto store = TcpStore::Create({.host = "127.0.0.1", .port = 0, .is_server = true});
  EXPECT_TRUE(store.ok()) << store.status();
  return *std::move(store);
}

std::unique_ptr<TcpStore> Client(int port, absl::Duration connect_timeout = absl::Seconds(5)) {
  auto store = TcpStore::Create(
      {.host = "127.0.0.1", .port = port, .connect_timeout = connect_timeout});
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

TEST(TcpStoreTest, ClientsAndServerSeeEachOthersKeys) {
  auto server = Server();
  auto a = Client(server->port());
  auto b = Client(server->port());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->Set("from_a", std::string("x\0y", 3)).ok());
  ASSERT_TRUE(server->Set("from_0", "zero").ok());
  EXPECT_EQ(*b->Get("from_a", absl::Seconds(1)), std::string("x\0y", 3));
  EXPECT_EQ(*server->Get("from_a", absl::Seconds(1)), std::string("x\0y", 3));
  EXPECT_EQ(*a->Get("from_0", absl::Seconds(1)), "zero");
  ASSERT_TRUE(b->Set("from_a", "replaced").ok());
  EXPECT_EQ(*a->Get("from_a", absl::Seconds(1)), "replaced");
  ASSERT_TRUE(a->Set("empty", "").ok());
  EXPECT_EQ(*b->Get("empty", absl::Seconds(1)), "");
}

TEST(TcpStoreTest, GetWaitsForALaterSet) {
  auto server = Server();
  auto a = Client(server->port());
  auto b = Client(server->port());
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(200));
    ASSERT_TRUE(b->Set("late", "value").ok());
  });
  auto value = a->Get("late", absl::Seconds(5));
  setter.join();
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "value");
}

TEST(TcpStoreTest, GetTimesOutNamingKeyStoreAndTimeout) {
  auto server = Server();
  auto client = Client(server->port());
  const absl::Time start = absl::Now();
  auto value = client->Get("nccl/unique_id", absl::Milliseconds(300));
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(value.status().code(), absl::StatusCode::kDeadlineExceeded);
  const std::string message(value.status().message());
  EXPECT_NE(message.find("'nccl/unique_id'"), std::string::npos) << message;
  EXPECT_NE(message.find("MASTER_ADDR:MASTER_PORT = 127.0.0.1:" + std::to_string(server->port())),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("300ms"), std::string::npos) << message;
  EXPECT_GE(took, absl::Milliseconds(290));
  EXPECT_LT(took, absl::Seconds(3));
  // The server's own lookups time out the same way.
  EXPECT_EQ(server->Get("missing", absl::Milliseconds(10)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(TcpStoreTest, ClientRetriesUntilTheServerStarts) {
  // Reserve a free port, release it, and start the server there only after the client began.
  int port = 0;
  {
    auto probe = parallel_internal::Listen("127.0.0.1", 0);
    ASSERT_TRUE(probe.ok());
    port = *parallel_internal::BoundPort(probe->get());
  }
  std::unique_ptr<TcpStore> server;
  std::thread late([&] {
    absl::SleepFor(absl::Milliseconds(500));
    auto s = TcpStore::Create({.host = "127.0.0.1", .port = port, .is_server = true});
    ASSERT_TRUE(s.ok()) << s.status();
    server = *std::move(s);
    ASSERT_TRUE(server->Set("ready", "1").ok());
  });
  auto client = Client(port, absl::Seconds(10));
  ASSERT_TRUE(client != nullptr);
  EXPECT_EQ(*client->Get("ready", absl::Seconds(5)), "1");
  late.join();
}

TEST(TcpStoreTest, ConnectTimeoutNamesTheStoreAndTheLastError) {
  int port = 0;
  {
    auto probe = parallel_internal::Listen("127.0.0.1", 0);
    port = *parallel_internal::BoundPort(probe->get());
  }
  const absl::Time start = absl::Now();
  auto client = TcpStore::Create(
      {.host = "127.0.0.1", .port = port, .connect_timeout = absl::Milliseconds(400)});
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  const std::string message(client.status().message());
  EXPECT_NE(message.find("MASTER_ADDR:MASTER_PORT = 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("Connection refused"), std::string::npos) << message;
}

TEST(TcpStoreTest, ClientFailsPromptlyWhenTheServerGoesAway) {
  auto server = Server();
  auto client = Client(server->port());
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(200));
    server.reset();
  });
  const absl::Time start = absl::Now();
  auto value = client->Get("never", absl::Seconds(30));
  stopper.join();
  EXPECT_FALSE(value.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_FALSE(client->Set("after", "x").ok());
}

// A node's local rank 0 on another host is a client: when one of its workers dies during
// rendezvous, its wait for that worker's key must end at once, not after the startup timeout.
TEST(TcpStoreTest, AbortOnAClientEndsItsPendingGetWithTheReason) {
  auto server = Server();
  auto client = Client(server->port());
  ASSERT_TRUE(client);
  std::thread aborter([&] {
    absl::SleepFor(absl::Milliseconds(200));
    client->Abort(absl::UnavailableError("rank 5 exited with status 1"));
  });
  const absl::Time start = absl::Now();
  auto value = client->Get("gloo/5", absl::Seconds(30));
  aborter.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(value.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(value.status().message(), "rank 5 exited with status 1");
  const absl::Status later = client->Set("after", "x");
  EXPECT_EQ(later.message(), "rank 5 exited with status 1");
}

}  // namespace
}  // namespace dsv3::parallel_tcp_store_test
