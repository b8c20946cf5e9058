// CustomAllReduce: all-reduces of small device tensors among the GPUs of one host by reading the
// peers' memory directly over NVLink (kernels/custom_all_reduce.cuh), as vLLM and TensorRT-LLM do
// for decode steps, where NCCL's fixed cost is most of the time. NcclCommunicator uses it, when
// enabled, for the messages it takes and NCCL for the rest.
//
// Each rank allocates a staging buffer (two halves of max_bytes) and a signal block with
// cudaMalloc; the ranks exchange them once through the host communicator: peers in other
// processes open them as CUDA IPC handles, peers in this process (ranks as threads, dsv3-bench)
// use the pointers with peer access enabled. Every address the kernel uses is fixed from then
// on, so the all-reduces can be captured in CUDA graphs.
//
// The ranks must agree on every decision, or some would wait in the custom kernel for peers
// that went to NCCL: Create fails on every rank when it fails on one, and whether AllReduce takes
// a tensor depends only on its dtype and size, which every rank's call has alike.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/tensor.h"
#include "engine/parallel/communicator.h"
#include "kernels/custom_all_reduce.cuh"

namespace dsv3 {

class CustomAllReduce {
 public:
  // Enough for one decode step's F32 all-reduce at the largest graphed batch (256 tokens x 7168
  // x 4 bytes = 7 MiB); larger messages go to NCCL.
  static constexpr int64_t kDefaultMaxBytes = int64_t{8} << 20;

  // Collective over `host` (every rank calls it at once): allocates this rank's buffers on CUDA
  // device `device` and maps every peer's. FailedPrecondition on every rank, naming the rank and
  // the reason, when the group cannot use it: more than 8 ranks, ranks on different hosts, a
  // peer's GPU not visible to this process or not reachable by peer access, two ranks on one
  // GPU, or a CUDA call failing on any rank. `host` is used only during the call.
  static absl::StatusOr<std::unique_ptr<CustomAllReduce>> Create(Communicator& host, int device,
                                                                 int64_t max_bytes);
  // Unmaps the peers' buffers and frees this rank's. No all-reduce may still run on any rank
  // (the same condition as ncclCommDestroy); after Abort() nothing is freed, since kernels may
  // still be draining.
  ~CustomAllReduce();

  // Whether AllReduce takes `data`: a contiguous F32 or BF16 device tensor of at most
  // max_bytes. Depends on nothing that differs between ranks.
  bool Takes(const TensorView& data) const;
  // When Takes(data): enqueues the in-place sum over ranks on `stream` (device `device`) and
  // returns true; every rank must make the same calls in the same order. The algorithm is
  // kernels::PeerAllReduceTwoShot's. Otherwise false, and nothing is enqueued.
  bool AllReduce(const TensorView& data, cudaStream_t stream);

  // Makes every pending and later wait give up at once (a peer is gone): kernels end with
  // undefined results. Safe from any thread.
  void Abort();

 private:
  // A peer's buffers as this process maps them.
  struct PeerMapping {
    void* staging = nullptr;
    void* signal = nullptr;
    bool opened_ipc = false;  // closed with cudaIpcCloseMemHandle
  };

  CustomAllReduce() = default;
  void Release();

  int device_ = 0;
  int rank_ = 0, world_ = 0;
  int64_t max_bytes_ = 0;
  void* staging_ = nullptr;         // 2 x max_bytes_
  void* signal_ = nullptr;          // a kernels::PeerAllReduceSignal, zeroed
  uint32_t* abort_ = nullptr;       // host-mapped word the kernels poll
  std::vector<PeerMapping> peers_;  // [world]; this rank's entry is empty
  kernels::PeerAllReduceParams params_{};
  std::atomic<bool> aborted_{false};
};

}  // namespace dsv3
