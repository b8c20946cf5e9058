// NcclCommunicator: tensor collectives on GPU memory through NCCL, enqueued on the CUDA backend's
// stream (so they order with the model's kernels and can be captured in CUDA graphs). Byte
// broadcasts and barriers, which carry host data (the step plan), go to the host communicator
// (gloo) it wraps. Built only with the CUDA backend (dsv3_nccl).
//
// Failure: NCCL collectives are asynchronous, so a dead peer shows up when the backend waits on
// its stream, not here. The group still fails promptly because rank 0's heartbeat barrier and the
// launcher (gloo, TCP) notice the dead rank and rank 0 exits; a worker whose rank 0 is gone fails
// its next plan broadcast. Abort() unblocks a stream stuck in a collective.
//
// With NcclOptions::custom_all_reduce, all-reduces of up to CustomAllReduce::kDefaultMaxBytes
// run over peer memory instead (custom_all_reduce.h) when every rank is on one host and its GPUs
// reach each other; otherwise (logged once) NCCL takes them all.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/tcp_store.h"

namespace dsv3 {

struct NcclOptions {
  int local_rank = 0;            // CUDA device of this rank
  void* cuda_stream = nullptr;   // cudaStream_t of the CUDA backend; null: the default stream
  absl::Duration rendezvous_timeout = absl::Minutes(10);  // waiting for rank 0's unique id
  // --custom-all-reduce: small all-reduces over peer memory (CustomAllReduce), NCCL for the rest.
  // Rank 0's value applies to every rank (it travels through `store` with the unique id).
  bool custom_all_reduce = false;
};

// Rank 0 makes the NCCL unique id and publishes it in `store` under "nccl/unique_id"; the others
// read it there. `host` (the gloo communicator of the same group) must outlive the result; at
// world size 1 `store` may be null.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(TcpStore* store,
                                                                     Communicator& host,
                                                                     const NcclOptions& options);

}  // namespace dsv3
