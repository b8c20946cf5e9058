// ParallelConfig: which rank this process is and how it finds the others, from --tp and the
// launcher environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK).
//
// Two ways to start a group:
//  - one host: `--tp N` without RANK in the environment. This process is rank 0; it serves the
//    rendezvous store on a free loopback port and spawns ranks 1..N-1 (Launcher).
//  - external launch (several hosts, Kubernetes, or the workers spawned above): RANK, WORLD_SIZE,
//    MASTER_ADDR and MASTER_PORT are set for every process; rank 0 serves the store on
//    MASTER_PORT, the others connect to MASTER_ADDR:MASTER_PORT.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dsv3 {

struct ParallelConfig {
  int world_size = 1;  // the tensor-parallel degree
  int rank = 0;
  int local_rank = 0;  // which GPU of this host (CUDA device index)
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0 when rank 0 spawns the workers: it picks a free port
  bool spawn_workers = false;  // rank 0 of a one-host --tp launch
  absl::Duration timeout = absl::Seconds(60);  // a collective (a step's) longest wait
  // Rendezvous and the barrier after loading weights, which can take minutes.
  absl::Duration startup_timeout = absl::Minutes(30);

  bool leader() const { return rank == 0; }
};

// Reads the environment through `getenv` (tests pass a map). `tp` is --tp (1 when not given);
// when RANK is set, a --tp other than 1 must equal WORLD_SIZE. InvalidArgument names the
// variable (or flag) and the value it has.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
absl::StatusOr<ParallelConfig> ParallelConfigFrom(int tp, absl::Duration timeout,
                                                  const EnvLookup& getenv);
// The same with the process environment.
absl::StatusOr<ParallelConfig> ParallelConfigFromEnvironment(int tp, absl::Duration timeout);

}  // namespace dsv3
