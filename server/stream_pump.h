// Runs the gRPC reactors' pumps (Fill a response, StartWrite) off the engine thread. The engine
// thread signals new output through RequestStream's notify, which must stay short: a reactor
// pumped there serializes protobufs and enters gRPC's transport for every stream it advances,
// which lengthened every decode step under load (H200, 64 streams: a 32-token gRPC request took
// ~100 ms where HTTP, which only signals a condition variable there, took ~56 ms).
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace dsv3::server {

class StreamPump {
 public:
  explicit StreamPump(int threads);
  ~StreamPump();  // runs what was posted, then joins
  StreamPump(const StreamPump&) = delete;
  StreamPump& operator=(const StreamPump&) = delete;

  // Queues `task` for one of the threads; never blocks on the task.
  void Post(std::function<void()> task);

 private:
  void Run();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace dsv3::server
