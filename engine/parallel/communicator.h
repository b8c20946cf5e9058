// Communicator: the collectives tensor parallelism needs, over NCCL (GPU tensors) or gloo (CPU
// tensors, TCP transport). Every rank calls the same collectives in the same order; a call that
// cannot complete (a peer died, a timeout passed) returns an error instead of hanging forever.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/backend/tensor.h"

namespace dsv3 {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // In place: every rank's `data` becomes the elementwise sum over ranks (F32, or BF16 on GPU).
  virtual absl::Status AllReduceSum(const TensorView& data) = 0;
  // out = concat over ranks (rank order) of each rank's `in`, along the first dimension:
  // in [n, ...], out [world_size * n, ...].
  virtual absl::Status AllGather(const TensorView& in, const TensorView& out) = 0;
  // All-to-all of whole rows in varying counts (expert-parallel dispatch and combine): `send`
  // [sum(send_rows), ...] holds send_rows[0] rows for rank 0, then send_rows[1] rows for rank 1,
  // and so on; `recv` [sum(recv_rows), ...] gets recv_rows[s] rows from each rank s, in rank
  // order. recv_rows[s] must equal what rank s sends to this rank (exchange the counts first,
  // with AllGather). Both spans have world_size entries; send and recv have the same dtype and
  // row shape and must not overlap. A rank with nothing to send or receive still calls it.
  virtual absl::Status AllToAllV(const TensorView& send, std::span<const int64_t> send_rows,
                                 const TensorView& recv, std::span<const int64_t> recv_rows) = 0;
  // Rank `root`'s bytes replace every other rank's (sizes may differ before the call).
  virtual absl::Status Broadcast(std::string& bytes, int root) = 0;
  virtual absl::Status Barrier() = 0;

  // A barrier with its own timeout, for the first meeting after loading weights, which may take
  // some ranks minutes longer than others (the per-collective timeout is seconds).
  virtual absl::Status StartupBarrier(absl::Duration /*timeout*/) { return Barrier(); }

  // Makes the pending and later collectives fail instead of waiting for a peer that is gone
  // (NCCL's abort; NCCL kernels would otherwise spin on a dead peer). Safe from any thread, and
  // it may block: call it off the threads that must go on. Nothing to do where every collective
  // times out by itself (gloo, one rank).
  virtual void Abort() {}
};

// The bytes of one row of `t` ([rows, ...]: the product of every dimension after the first).
int64_t RowBytes(const TensorView& t);
// InvalidArgument unless AllToAllV's arguments agree: world_size counts, equal dtypes and row
// shapes, send and recv holding exactly the rows the counts name, no negative count. `who`
// names the communicator in the error ("gloo", "NCCL").
absl::Status CheckAllToAllV(const char* who, int world_size, const TensorView& send,
                            std::span<const int64_t> send_rows, const TensorView& recv,
                            std::span<const int64_t> recv_rows);

// A communicator of one rank: every collective is the identity. Used when --tp is 1, so the
// model code has one path.
class SingleRankCommunicator final : public Communicator {
 public:
  // It holds no state, so one instance serves every single-rank model.
  static SingleRankCommunicator& Instance() {
    static SingleRankCommunicator instance;
    return instance;
  }

  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  absl::Status AllReduceSum(const TensorView&) override { return absl::OkStatus(); }
  absl::Status AllGather(const TensorView& in, const TensorView& out) override;
  absl::Status AllToAllV(const TensorView& send, std::span<const int64_t> send_rows,
                         const TensorView& recv, std::span<const int64_t> recv_rows) override;
  absl::Status Broadcast(std::string&, int) override { return absl::OkStatus(); }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace dsv3
