// GlooCommunicator: the Communicator over gloo's TCP transport, for host (CPU) tensors, and the
// control plane of every multi-rank run (the step plan broadcast, barriers), GPU runs included.
// Ranks find each other through the TcpStore; every collective has a timeout, and a dead peer
// (its sockets close) fails the pending collective at once rather than at the timeout.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/tcp_store.h"

namespace gloo {
class Context;
}

namespace dsv3 {

struct GlooOptions {
  int rank = 0;
  int world_size = 1;
  // The address this rank advertises to its peers: "127.0.0.1" when every rank is on one host,
  // else an address of this host that the others can reach (LocalAddressToward MASTER_ADDR).
  std::string hostname = "127.0.0.1";
  absl::Duration timeout = absl::Seconds(60);             // every collective
  absl::Duration rendezvous_timeout = absl::Minutes(10);  // waiting for every rank to join
  // Store keys are "<key_prefix>/<rank>", so that several communicators can share one store.
  std::string key_prefix = "gloo";
};

// Not thread-safe: one caller at a time (every rank calls the collectives in the same order).
class GlooCommunicator final : public Communicator {
 public:
  // Connects the full mesh. DeadlineExceeded naming the missing rank's key when a rank does not
  // join within rendezvous_timeout.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(TcpStore& store,
                                                                  const GlooOptions& options);
  ~GlooCommunicator() override;

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }
  // Host F32 tensors only (contiguous).
  absl::Status AllReduceSum(const TensorView& data) override;
  // Host tensors of any dtype (contiguous); out has world_size times in's elements.
  absl::Status AllGather(const TensorView& in, const TensorView& out) override;
  // Host tensors of any dtype (contiguous).
  absl::Status AllToAllV(const TensorView& send, std::span<const int64_t> send_rows,
                         const TensorView& recv, std::span<const int64_t> recv_rows) override;
  // The size first, then the payload.
  absl::Status Broadcast(std::string& bytes, int root) override;
  absl::Status Barrier() override;
  absl::Status StartupBarrier(absl::Duration timeout) override;
  // OK, or the first collective error. After one, every collective fails at once with it: a
  // caller that carries on after an error cannot hang in the next collective.
  absl::Status status() const { return failed_; }

 private:
  GlooCommunicator(GlooOptions options, std::shared_ptr<gloo::Context> context);
  // Runs one gloo collective, turning its exceptions into a status that poisons the communicator.
  template <typename Fn>
  absl::Status Run(const char* what, Fn&& fn);
  absl::Status BarrierFor(absl::Duration timeout);

  GlooOptions options_;
  std::shared_ptr<gloo::Context> context_;
  uint32_t next_tag_ = 0;
  absl::Status failed_;
};

}  // namespace dsv3
