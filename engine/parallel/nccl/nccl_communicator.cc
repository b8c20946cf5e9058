#include "engine/parallel/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/parallel/nccl/custom_all_reduce.h"
#include "engine/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace dsv3 {
namespace {

constexpr const char* kUniqueIdKey = "nccl/unique_id";
// Rank 0's NcclOptions::custom_all_reduce ("1" or "0"), set before the unique id.
constexpr const char* kCustomAllReduceKey = "nccl/custom_all_reduce";

absl::Status NcclError(const char* what, ncclResult_t r, ncclComm_t comm) {
  std::string detail = ncclGetErrorString(r);
  if (comm != nullptr) {
    if (const char* last = ncclGetLastError(comm); last != nullptr && *last != '\0') {
      absl::StrAppend(&detail, ": ", last);
    }
  }
  return absl::UnavailableError(absl::StrCat("NCCL ", what, ": ", detail));
}

absl::StatusOr<ncclDataType_t> NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("NCCL all-reduce of ", std::string(DTypeName(dtype)), " (F32 or BF16 only)"));
  }
}

absl::Status CheckDeviceTensor(const TensorView& t, const char* name) {
  if (t.device != Device::kCuda || !t.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL: ", name, " must be a contiguous device tensor"));
  }
  return absl::OkStatus();
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, Communicator& host, cudaStream_t stream,
                   std::unique_ptr<CustomAllReduce> custom)
      : comm_(comm), host_(host), stream_(stream), custom_(std::move(custom)) {}
  ~NcclCommunicator() override {
    if (aborted_.load()) return;  // ncclCommAbort already freed it
    ncclCommDestroy(comm_);
  }

  int rank() const override { return host_.rank(); }
  int world_size() const override { return host_.world_size(); }

  absl::Status AllReduceSum(const TensorView& data) override {
    DSV3_RETURN_IF_ERROR(CheckDeviceTensor(data, "all-reduce buffer"));
    DSV3_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(data.dtype));
    if (custom_ != nullptr && custom_->AllReduce(data, stream_)) {
      return Check("custom all-reduce", ncclSuccess);
    }
    return Check("all-reduce", ncclAllReduce(data.data, data.data, data.numel(), type, ncclSum,
                                             comm_, stream_));
  }

  absl::Status AllGather(const TensorView& in, const TensorView& out) override {
    DSV3_RETURN_IF_ERROR(CheckDeviceTensor(in, "all-gather input"));
    DSV3_RETURN_IF_ERROR(CheckDeviceTensor(out, "all-gather output"));
    if (in.dtype != out.dtype || out.numel() != in.numel() * world_size()) {
      return absl::InvalidArgumentError(absl::StrCat("NCCL all-gather of ", in.ShapeString(),
                                                     " into ", out.ShapeString()));
    }
    return Check("all-gather",
                 ncclAllGather(in.data, out.data, in.nbytes(), ncclUint8, comm_, stream_));
  }

  // One NCCL group of point-to-point transfers: each peer's rows go by ncclSend, each peer's rows
  // come by ncclRecv (empty ones skipped), enqueued on the backend's stream.
  absl::Status AllToAllV(const TensorView& send, std::span<const int64_t> send_rows,
                         const TensorView& recv, std::span<const int64_t> recv_rows) override {
    DSV3_RETURN_IF_ERROR(CheckAllToAllV("NCCL", world_size(), send, send_rows, recv, recv_rows));
    if (send.nbytes() > 0) DSV3_RETURN_IF_ERROR(CheckDeviceTensor(send, "all-to-all input"));
    if (recv.nbytes() > 0) DSV3_RETURN_IF_ERROR(CheckDeviceTensor(recv, "all-to-all output"));
    const int64_t row_bytes = RowBytes(send);
    DSV3_RETURN_IF_ERROR(Check("all-to-all (group start)", ncclGroupStart()));
    int64_t send_offset = 0, recv_offset = 0;
    ncclResult_t first_error = ncclSuccess;
    for (int peer = 0; peer < world_size(); ++peer) {
      const int64_t out_bytes = send_rows[peer] * row_bytes, in_bytes = recv_rows[peer] * row_bytes;
      if (out_bytes > 0 && first_error == ncclSuccess) {
        first_error = ncclSend(static_cast<const char*>(send.data) + send_offset, out_bytes,
                               ncclUint8, peer, comm_, stream_);
      }
      if (in_bytes > 0 && first_error == ncclSuccess) {
        first_error = ncclRecv(static_cast<char*>(recv.data) + recv_offset, in_bytes, ncclUint8,
                               peer, comm_, stream_);
      }
      send_offset += out_bytes;
      recv_offset += in_bytes;
    }
    // The group is always closed, even after a failed enqueue.
    const ncclResult_t end = ncclGroupEnd();
    DSV3_RETURN_IF_ERROR(Check("all-to-all", first_error));
    return Check("all-to-all (group end)", end);
  }

  absl::Status Broadcast(std::string& bytes, int root) override {
    return host_.Broadcast(bytes, root);
  }
  absl::Status Barrier() override { return host_.Barrier(); }
  absl::Status StartupBarrier(absl::Duration timeout) override {
    return host_.StartupBarrier(timeout);
  }

  // The custom all-reduce first: its kernels stop waiting at once, while ncclCommAbort may block.
  void Abort() override {
    if (aborted_.exchange(true)) return;
    if (custom_ != nullptr) custom_->Abort();
    ncclCommAbort(comm_);
  }

 private:
  absl::Status Check(const char* what, ncclResult_t r) {
    if (aborted_.load()) return absl::UnavailableError("NCCL communicator aborted");
    if (r == ncclSuccess) return absl::OkStatus();
    return NcclError(what, r, comm_);
  }

  ncclComm_t comm_;
  Communicator& host_;
  cudaStream_t stream_;
  std::unique_ptr<CustomAllReduce> custom_;  // null: NCCL for every all-reduce
  std::atomic<bool> aborted_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(TcpStore* store,
                                                                     Communicator& host,
                                                                     const NcclOptions& options) {
  if (cudaError_t e = cudaSetDevice(options.local_rank); e != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrCat("cudaSetDevice(", options.local_rank,
                                                      ") for LOCAL_RANK: ", cudaGetErrorString(e)));
  }
  ncclUniqueId id;
  bool custom_all_reduce = options.custom_all_reduce;
  if (host.rank() == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return NcclError("get unique id", r, nullptr);
    }
    if (store != nullptr) {
      DSV3_RETURN_IF_ERROR(store->Set(kCustomAllReduceKey, custom_all_reduce ? "1" : "0"));
      DSV3_RETURN_IF_ERROR(store->Set(kUniqueIdKey, std::string(id.internal, sizeof(id.internal))));
    }
  } else {
    if (store == nullptr) return absl::InvalidArgumentError("NCCL: a worker rank needs the store");
    DSV3_ASSIGN_OR_RETURN(const std::string bytes,
                          store->Get(kUniqueIdKey, options.rendezvous_timeout));
    if (bytes.size() != sizeof(id.internal)) {
      return absl::DataLossError(absl::StrCat("NCCL unique id of ", bytes.size(), " bytes"));
    }
    std::memcpy(id.internal, bytes.data(), sizeof(id.internal));
    // Rank 0's choice applies: ranks launched with different flags must not split between the
    // custom kernel and NCCL (each would wait for the other forever).
    DSV3_ASSIGN_OR_RETURN(const std::string leader,
                          store->Get(kCustomAllReduceKey, options.rendezvous_timeout));
    if ((leader == "1") != custom_all_reduce) {
      spdlog::warn("rank {}: --custom-all-reduce is {} on rank 0, which decides for the group",
                   host.rank(), leader == "1" ? "on" : "off");
    }
    custom_all_reduce = leader == "1";
  }
  ncclComm_t comm = nullptr;
  if (ncclResult_t r = ncclCommInitRank(&comm, host.world_size(), id, host.rank());
      r != ncclSuccess) {
    return NcclError("init", r, nullptr);
  }
  std::unique_ptr<CustomAllReduce> custom;
  if (custom_all_reduce && host.world_size() > 1) {
    // Create fails alike on every rank, so either all ranks use it or none does.
    auto made =
        CustomAllReduce::Create(host, options.local_rank, CustomAllReduce::kDefaultMaxBytes);
    if (made.ok()) {
      custom = *std::move(made);
      if (host.rank() == 0) {
        spdlog::info("custom all-reduce on: up to {} KiB over peer memory, larger by NCCL",
                     CustomAllReduce::kDefaultMaxBytes >> 10);
      }
    } else if (host.rank() == 0) {
      spdlog::warn("custom all-reduce off, NCCL takes every all-reduce: {}",
                   std::string(made.status().message()));
    }
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(
      comm, host, static_cast<cudaStream_t>(options.cuda_stream), std::move(custom)));
}

}  // namespace dsv3
