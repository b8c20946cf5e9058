// LoadProgress: how far this rank's weight load is, per shard and in total. The parallel reader
// feeds it bytes as they arrive; it logs one line per finished shard (shard i/N, bytes, GB/s,
// overall progress, ETA) and answers snapshots for the server's metrics (server/load_metrics.h)
// from any thread while the load runs. GB are 10^9 bytes, as disks and networks count them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dsv3 {

class LoadProgress {
 public:
  struct Snapshot {
    uint64_t bytes_read = 0;
    uint64_t bytes_expected = 0;
    int shards_done = 0;
    int shards_total = 0;  // shards this rank reads anything from
    double seconds = 0;    // since Begin; frozen at Finish
    bool started = false;
    bool finished = false;
  };

  // Starts the clock. `expected[i]` is what will be read from the shard named `names[i]`
  // (0: the shard is not read and not counted).
  void Begin(std::vector<std::string> names, std::vector<uint64_t> expected);
  // `bytes` of shard `shard` have arrived (any thread). Logs the shard when it completes.
  void Add(int shard, uint64_t bytes);
  // Stops the clock and logs the summary line.
  void Finish();
  Snapshot Get() const;

 private:
  struct Shard {
    std::string name;
    uint64_t expected = 0;
    uint64_t read = 0;
    absl::Time first = absl::InfinitePast();  // first bytes arrived
  };
  mutable absl::Mutex mu_;
  std::vector<Shard> shards_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_read_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bytes_expected_ ABSL_GUARDED_BY(mu_) = 0;
  int shards_done_ ABSL_GUARDED_BY(mu_) = 0;
  int shards_total_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time start_ ABSL_GUARDED_BY(mu_);
  absl::Time end_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace dsv3
