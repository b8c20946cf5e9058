// Launcher: local rank 0 of a node (rank 0 of a one-host --tp launch, or the process of one node
// in a --nnodes launch) starts the node's other ranks as copies of this program and supervises
// them.
//
// No worker outlives rank 0: each child asks the kernel for SIGKILL when its parent dies
// (PR_SET_PDEATHSIG, which covers a crash or SIGKILL of rank 0), and Stop() (also run by the
// destructor) kills and reaps whatever is left. PR_SET_PDEATHSIG fires when the *thread* that
// forked exits, so call Start from the main thread (or one that lives as long as the process).
//
// A worker that exits while the group runs is reported through `on_worker_exit`, from the
// supervisor thread; the caller decides what that means (the server turns NOT_SERVING and
// exits non-zero).
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dsv3 {

struct LaunchOptions {
  std::string program = "/proc/self/exe";
  std::vector<std::string> args;  // argv[1..] of every worker (the launching process's own)
  int world_size = 1;             // WORLD_SIZE of every rank
  // The launching process is global rank `first_rank` and LOCAL_RANK 0; it spawns the node's
  // ranks first_rank + i with LOCAL_RANK i, for i in 1..node_ranks-1.
  int first_rank = 0;
  int node_ranks = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // Called once per worker that exits before Stop(), with its rank and "exited with status 3"
  // or "killed by signal 9". Runs on a supervisor thread; keep it short.
  std::function<void(int rank, const std::string& how)> on_worker_exit = nullptr;
  // Whether a worker that exits with status 0 is reported. Global rank 0 decides when the group
  // stops, so any exit before Stop() is a failure to it; on another node a worker exits 0 when
  // rank 0 ends the group, at the same moment as the launching process.
  bool report_clean_exits = true;
};

class Launcher {
 public:
  // Spawns the workers with the environment of this process plus RANK, WORLD_SIZE, MASTER_ADDR,
  // MASTER_PORT and LOCAL_RANK. Fails when a fork fails (the workers already started are
  // killed).
  static absl::StatusOr<std::unique_ptr<Launcher>> Start(const LaunchOptions& options);
  ~Launcher();  // Stop(absl::ZeroDuration())

  // Waits up to `grace` for every worker to exit on its own (rank 0 sent them a shutdown), then
  // SIGKILLs the rest and reaps them all. No exit after this call is reported. Idempotent and
  // safe from several threads at once: every call returns only once the workers are reaped and
  // the supervisor threads joined (a later caller waits for the first). Not from
  // on_worker_exit (it joins the supervisor threads).
  void Stop(absl::Duration grace);

  std::vector<pid_t> pids() const;
  // Workers that have exited, for whatever reason.
  int exited() const;

 private:
  struct Worker {
    int rank = 0;
    pid_t pid = -1;
    bool exited = false;  // seen by waitid; the pid stays reserved until the supervisor reaps it
  };
  explicit Launcher(LaunchOptions options) : options_(std::move(options)) {}
  absl::Status SpawnAll();
  void Supervise(size_t index);

  const LaunchOptions options_;
  // Held through a whole Stop, so that no caller returns (and no destructor runs) while another
  // is still joining the supervisors. Taken before mu_.
  absl::Mutex stop_mu_;
  mutable absl::Mutex mu_;
  std::vector<Worker> workers_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> supervisors_ ABSL_GUARDED_BY(stop_mu_);
};

}  // namespace dsv3
