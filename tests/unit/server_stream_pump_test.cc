// StreamPump, where the gRPC reactors advance their streams: every posted task runs exactly once,
// on the pump's threads (never the caller's), and the destructor runs what is still queued.
#include "server/stream_pump.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"

namespace dsv3::server::server_stream_pump_test {
namespace {

TEST(StreamPumpTest, RunsEveryTaskOnceOffTheCallersThread) {
  for (int threads : {1, 4}) {
    std::atomic<int> runs{0}, on_caller{0};
    const std::thread::id caller = std::this_thread::get_id();
    {
      StreamPump pump(threads);
      for (int i = 0; i < 1000; ++i) {
        pump.Post([&] {
          if (std::this_thread::get_id() == caller) ++on_caller;
          ++runs;
        });
      }
    }  // the destructor drains the queue
    EXPECT_EQ(runs.load(), 1000) << threads << " threads";
    EXPECT_EQ(on_caller.load(), 0) << threads << " threads";
  }
}

TEST(StreamPumpTest, PostNeverWaitsForARunningTask) {
  StreamPump pump(1);
  absl::Notification release, second_ran;
  pump.Post([&] { release.WaitForNotification(); });
  pump.Post([&] { second_ran.Notify(); });  // queued behind the blocked task: Post returns
  EXPECT_FALSE(second_ran.HasBeenNotified());
  release.Notify();
  second_ran.WaitForNotification();
}

}  // namespace
}  // namespace dsv3::server::server_stream_pump_test
