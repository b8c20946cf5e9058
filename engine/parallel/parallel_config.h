// ParallelConfig: which rank this process is and how it finds the others, from the launch flags
// (--tp, --nnodes, --node-rank, --dist-init-addr) and the launcher environment (RANK,
// WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK, NNODES, NODE_RANK).
//
// Three ways to start a group:
//  - one host: `--tp N` and nothing else. This process is rank 0: it serves the rendezvous
//    store on a free loopback port and spawns ranks 1..N-1 (Launcher).
//  - one process per node (torchrun's and SGLang's shape): on every node `--tp N --nnodes M
//    --node-rank K --dist-init-addr HOST:PORT`, or NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT
//    in the environment. Each node runs N/M ranks: this process is the node's local rank 0,
//    global rank K*N/M, and spawns local ranks 1..N/M-1 (global rank = K*N/M + local rank;
//    LOCAL_RANK = the GPU index). Global rank 0 serves the store on PORT (all interfaces); the
//    others connect to HOST:PORT.
//  - one process per rank (an external launcher, and every spawned worker): RANK, WORLD_SIZE,
//    MASTER_ADDR and MASTER_PORT (and LOCAL_RANK) set for every process.
// A flag and its environment variable may both be given only when they agree.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dsv3 {

// The per-node launch flags as the user gave them; the defaults mean "not given", which leaves
// the decision to NNODES, NODE_RANK, MASTER_ADDR/MASTER_PORT (or to a one-host launch).
struct NodeLaunchFlags {
  int nnodes = 0;              // --nnodes; given when >= 1
  int node_rank = -1;          // --node-rank; given when >= 0
  std::string dist_init_addr;  // --dist-init-addr HOST:PORT (global rank 0's store); given when set
};

struct ParallelConfig {
  int world_size = 1;  // the tensor-parallel degree
  int rank = 0;
  int local_rank = 0;  // which GPU of this host (CUDA device index)
  // Ranks this process runs on its host: itself plus the node_ranks - 1 workers it spawns
  // (global ranks rank+1 .., LOCAL_RANK 1 ..). > 1 only on local rank 0 of a --tp or --nnodes
  // launch; 1 for every externally launched or spawned rank.
  int node_ranks = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0 on a one-host launch: rank 0 picks a free port
  absl::Duration timeout = absl::Seconds(60);  // a collective (a step's) longest wait
  // Rendezvous and the barrier after loading weights, which can take minutes.
  absl::Duration startup_timeout = absl::Minutes(30);
  // --custom-all-reduce: on GPUs, small all-reduces over peer memory instead of NCCL when every
  // rank is on one host (engine/parallel/nccl/custom_all_reduce.h). Not from the environment.
  bool custom_all_reduce = false;

  bool leader() const { return rank == 0; }
  bool spawn_workers() const { return node_ranks > 1; }
};

// Reads the environment through `getenv` (tests pass a map). `tp` is --tp (1 when not given);
// when RANK is set, a --tp other than 1 must equal WORLD_SIZE. InvalidArgument names the flag or
// variable and the value it has.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
absl::StatusOr<ParallelConfig> ParallelConfigFrom(int tp, const NodeLaunchFlags& node,
                                                  absl::Duration timeout,
                                                  const EnvLookup& getenv);
// The same with the process environment.
absl::StatusOr<ParallelConfig> ParallelConfigFromEnvironment(int tp, const NodeLaunchFlags& node,
                                                             absl::Duration timeout);

}  // namespace dsv3
