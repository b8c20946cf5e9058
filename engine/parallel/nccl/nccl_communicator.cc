#include "engine/parallel/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

constexpr const char* kUniqueIdKey = "nccl/unique_id";

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
  NcclCommunicator(ncclComm_t comm, Communicator& host, cudaStream_t stream)
      : comm_(comm), host_(host), stream_(stream) {}
  ~NcclCommunicator() override {
    if (aborted_.load()) return;  // ncclCommAbort already freed it
    ncclCommDestroy(comm_);
  }

  int rank() const override { return host_.rank(); }
  int world_size() const override { return host_.world_size(); }

  absl::Status AllReduceSum(const TensorView& data) override {
    DSV3_RETURN_IF_ERROR(CheckDeviceTensor(data, "all-reduce buffer"));
    DSV3_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(data.dtype));
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

  absl::Status Broadcast(std::string& bytes, int root) override {
    return host_.Broadcast(bytes, root);
  }
  absl::Status Barrier() override { return host_.Barrier(); }
  absl::Status StartupBarrier(absl::Duration timeout) override {
    return host_.StartupBarrier(timeout);
  }

  void Abort() {
    if (!aborted_.exchange(true)) ncclCommAbort(comm_);
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
  if (host.rank() == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return NcclError("get unique id", r, nullptr);
    }
    if (store != nullptr) {
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
  }
  ncclComm_t comm = nullptr;
  if (ncclResult_t r = ncclCommInitRank(&comm, host.world_size(), id, host.rank());
      r != ncclSuccess) {
    return NcclError("init", r, nullptr);
  }
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(comm, host, static_cast<cudaStream_t>(options.cuda_stream)));
}

void AbortNcclCommunicator(Communicator& comm) {
  if (auto* nccl = dynamic_cast<NcclCommunicator*>(&comm)) nccl->Abort();
}

}  // namespace dsv3
