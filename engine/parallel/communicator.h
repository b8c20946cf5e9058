// Communicator: the collectives tensor parallelism needs, over NCCL (GPU tensors) or gloo (CPU
// tensors, TCP transport). Every rank calls the same collectives in the same order; a call that
// cannot complete (a peer died, a timeout passed) returns an error instead of hanging forever.
#pragma once

#include <memory>
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
  // Rank `root`'s bytes replace every other rank's (sizes may differ before the call).
  virtual absl::Status Broadcast(std::string& bytes, int root) = 0;
  virtual absl::Status Barrier() = 0;

  // A barrier with its own timeout, for the first meeting after loading weights, which may take
  // some ranks minutes longer than others (the per-collective timeout is seconds).
  virtual absl::Status StartupBarrier(absl::Duration /*timeout*/) { return Barrier(); }
};

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
  absl::Status Broadcast(std::string&, int) override { return absl::OkStatus(); }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace dsv3
