// N gloo communicators over one loopback TcpStore, for tests that run ranks as threads of one
// process (each rank with its own communicator and backend).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "engine/parallel/gloo_communicator.h"
#include "engine/parallel/tcp_store.h"

namespace dsv3::testing {

struct GlooGroup {
  // Makes the communicators concurrently (the rendezvous needs every rank at once); a failure
  // leaves that rank's null (and fails the test).
  explicit GlooGroup(int n) {
    stores.push_back(*TcpStore::Create({.host = "127.0.0.1", .port = 0, .is_server = true}));
    for (int r = 1; r < n; ++r) {
      stores.push_back(*TcpStore::Create({.host = "127.0.0.1", .port = stores[0]->port()}));
    }
    comms.resize(n);
    OnEveryRank([&](int r) {
      auto comm = GlooCommunicator::Create(*stores[r], {.rank = r, .world_size = n});
      ASSERT_TRUE(comm.ok()) << comm.status();
      comms[r] = *std::move(comm);
    });
  }

  // Runs fn(rank) on a thread per rank and waits for all.
  void OnEveryRank(const std::function<void(int)>& fn) const {
    std::vector<std::thread> threads;
    for (int r = 0; r < static_cast<int>(comms.size()); ++r) threads.emplace_back(fn, r);
    for (auto& t : threads) t.join();
  }

  std::vector<std::unique_ptr<TcpStore>> stores;
  std::vector<std::unique_ptr<GlooCommunicator>> comms;
};

}  // namespace dsv3::testing
