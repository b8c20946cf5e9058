// The per-node launch flags on a CLI11 app, the same for every program that starts a
// tensor-parallel group (dsv3-server, dsv3-generate, dsv3-eval). Names and meanings follow
// SGLang's launcher (--nnodes, --node-rank, --dist-init-addr), which LeaderWorkerSet examples
// use. Header-only: the engine's libraries do not link CLI11; the programs do.
#pragma once

#include "CLI/CLI.hpp"
#include "engine/parallel/parallel_config.h"

namespace dsv3 {

inline void AddNodeLaunchFlags(CLI::App& app, NodeLaunchFlags& node) {
  app.add_option("--nnodes", node.nnodes,
                 "hosts the --tp ranks span: run this program once per host, each with "
                 "--node-rank; each starts --tp / --nnodes ranks (or NNODES)")
      ->check(CLI::Range(1, 64))
      ->default_str("");  // the field's 0 means "not given"
  app.add_option("--node-rank", node.node_rank,
                 "this host's index in 0..--nnodes - 1; node 0 runs global rank 0, which serves "
                 "the APIs (or NODE_RANK)")
      ->check(CLI::Range(0, 63))
      ->default_str("");  // the field's -1 means "not given"
  app.add_option("--dist-init-addr", node.dist_init_addr,
                 "HOST:PORT where node 0 serves the ranks' rendezvous, reachable from every "
                 "host (or MASTER_ADDR and MASTER_PORT)");
}

}  // namespace dsv3
