#include "engine/parallel/nccl/custom_all_reduce.h"

#include <cuda_runtime.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

// What a rank tells the others about itself, sent as raw bytes.
struct RankRecord {
  char hostname[256];
  uint64_t process;  // random per process: peers in this process are used without IPC
  char gpu_uuid[16];
  cudaIpcMemHandle_t staging_handle, signal_handle;
  uint64_t staging, signal;  // addresses, for peers in the same process
};

uint64_t ThisProcess() {
  static const uint64_t id = [] {
    std::random_device seed;
    return (uint64_t{seed()} << 32) ^ seed() ^ static_cast<uint64_t>(getpid());
  }();
  return id;
}

absl::Status CudaError(const char* what, cudaError_t e) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}
#define DSV3_CUDA_RETURN_IF_ERROR(expr)                                           \
  do {                                                                            \
    if (const cudaError_t _dsv3_cuda_err = (expr); _dsv3_cuda_err != cudaSuccess) \
      return CudaError(#expr, _dsv3_cuda_err);                                    \
  } while (0)

std::string Hostname() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

absl::StatusOr<cudaUUID_t> GpuUuid(int device) {
  cudaDeviceProp prop;
  DSV3_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  return prop.uuid;
}

// Every rank's `mine`, in rank order (one broadcast from each rank).
absl::StatusOr<std::vector<std::string>> AllGatherBytes(Communicator& host,
                                                        const std::string& mine) {
  std::vector<std::string> all(host.world_size());
  for (int root = 0; root < host.world_size(); ++root) {
    all[root] = root == host.rank() ? mine : "";
    DSV3_RETURN_IF_ERROR(host.Broadcast(all[root], root));
  }
  return all;
}

// The CUDA device index, in this process, of the GPU with `uuid`; -1 if it is not visible.
absl::StatusOr<int> VisibleDevice(const char (&uuid)[16]) {
  int count = 0;
  DSV3_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  for (int d = 0; d < count; ++d) {
    DSV3_ASSIGN_OR_RETURN(const cudaUUID_t u, GpuUuid(d));
    if (std::memcmp(u.bytes, uuid, sizeof(u.bytes)) == 0) return d;
  }
  return -1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CustomAllReduce>> CustomAllReduce::Create(Communicator& host,
                                                                         int device,
                                                                         int64_t max_bytes) {
  const int world = host.world_size(), rank = host.rank();
  if (world < 2 || world > kernels::kPeerAllReduceMaxRanks) {
    return absl::FailedPreconditionError(absl::StrCat("custom all-reduce: ", world, " ranks (2 to ",
                                                      kernels::kPeerAllReduceMaxRanks, ")"));
  }
  if (max_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("custom all-reduce: max_bytes ", max_bytes));
  }
  std::unique_ptr<CustomAllReduce> car(new CustomAllReduce());
  car->device_ = device;
  car->rank_ = rank;
  car->world_ = world;
  car->max_bytes_ = (max_bytes + 15) / 16 * 16;  // whole 16-byte packs
  car->peers_.resize(world);

  // Each step fails locally first; the ranks compare verdicts only at the end, so that every
  // rank makes the same collective calls whatever happened.
  RankRecord mine{};
  absl::Status local = [&]() -> absl::Status {
    DSV3_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    DSV3_CUDA_RETURN_IF_ERROR(cudaMalloc(&car->staging_, 2 * car->max_bytes_));
    DSV3_CUDA_RETURN_IF_ERROR(cudaMalloc(&car->signal_, sizeof(kernels::PeerAllReduceSignal)));
    DSV3_CUDA_RETURN_IF_ERROR(cudaMemset(car->signal_, 0, sizeof(kernels::PeerAllReduceSignal)));
    DSV3_CUDA_RETURN_IF_ERROR(cudaHostAlloc(reinterpret_cast<void**>(&car->abort_),
                                            sizeof(uint32_t), cudaHostAllocMapped));
    *car->abort_ = 0;
    void* abort_on_device = nullptr;
    DSV3_CUDA_RETURN_IF_ERROR(cudaHostGetDevicePointer(&abort_on_device, car->abort_, 0));
    car->params_.abort = static_cast<const volatile uint32_t*>(abort_on_device);
    DSV3_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());  // the zeros land before any peer looks
    DSV3_CUDA_RETURN_IF_ERROR(cudaIpcGetMemHandle(&mine.staging_handle, car->staging_));
    DSV3_CUDA_RETURN_IF_ERROR(cudaIpcGetMemHandle(&mine.signal_handle, car->signal_));
    std::strncpy(mine.hostname, Hostname().c_str(), sizeof(mine.hostname) - 1);
    mine.process = ThisProcess();
    DSV3_ASSIGN_OR_RETURN(const cudaUUID_t uuid, GpuUuid(device));
    std::memcpy(mine.gpu_uuid, uuid.bytes, sizeof(mine.gpu_uuid));
    mine.staging = reinterpret_cast<uintptr_t>(car->staging_);
    mine.signal = reinterpret_cast<uintptr_t>(car->signal_);
    return absl::OkStatus();
  }();
  DSV3_ASSIGN_OR_RETURN(
      const std::vector<std::string> records,
      AllGatherBytes(host, local.ok()
                               ? std::string(reinterpret_cast<const char*>(&mine), sizeof(mine))
                               : std::string()));
  if (local.ok()) {
    local = [&]() -> absl::Status {
      for (int r = 0; r < world; ++r) {
        if (r == rank) continue;
        RankRecord peer;
        if (records[r].size() != sizeof(peer)) {
          return absl::FailedPreconditionError(absl::StrCat("rank ", r, " has no buffers"));
        }
        std::memcpy(&peer, records[r].data(), sizeof(peer));
        if (std::strncmp(peer.hostname, mine.hostname, sizeof(mine.hostname)) != 0) {
          return absl::FailedPreconditionError(
              absl::StrCat("rank ", r, " runs on host '", peer.hostname, "' and this rank on '",
                           mine.hostname, "': it needs every rank on one host"));
        }
        DSV3_ASSIGN_OR_RETURN(const int peer_device, VisibleDevice(peer.gpu_uuid));
        if (peer_device < 0) {
          return absl::FailedPreconditionError(absl::StrCat(
              "the GPU of rank ", r, " is not visible to this process (CUDA_VISIBLE_DEVICES)"));
        }
        if (peer_device == device) {
          return absl::FailedPreconditionError(absl::StrCat("rank ", r, " shares GPU ", device));
        }
        int can = 0;
        DSV3_CUDA_RETURN_IF_ERROR(cudaDeviceCanAccessPeer(&can, device, peer_device));
        if (!can) {
          return absl::FailedPreconditionError(absl::StrCat(
              "GPU ", device, " cannot access the memory of GPU ", peer_device, " (rank ", r, ")"));
        }
        PeerMapping& map = car->peers_[r];
        if (peer.process == mine.process) {
          // cudaIpcOpenMemHandle refuses this process's own handles: use the addresses.
          if (const cudaError_t e = cudaDeviceEnablePeerAccess(peer_device, 0);
              e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) {
            return CudaError("cudaDeviceEnablePeerAccess", e);
          }
          cudaGetLastError();  // an "already enabled" stays as the last error otherwise
          map.staging = reinterpret_cast<void*>(peer.staging);
          map.signal = reinterpret_cast<void*>(peer.signal);
        } else {
          DSV3_CUDA_RETURN_IF_ERROR(cudaIpcOpenMemHandle(&map.staging, peer.staging_handle,
                                                         cudaIpcMemLazyEnablePeerAccess));
          map.opened_ipc = true;
          if (const cudaError_t e = cudaIpcOpenMemHandle(&map.signal, peer.signal_handle,
                                                         cudaIpcMemLazyEnablePeerAccess);
              e != cudaSuccess) {
            return CudaError("cudaIpcOpenMemHandle (signal)", e);
          }
        }
      }
      return absl::OkStatus();
    }();
  }
  DSV3_ASSIGN_OR_RETURN(const std::vector<std::string> verdicts,
                        AllGatherBytes(host, local.ok() ? "" : std::string(local.message())));
  for (int r = 0; r < world; ++r) {
    if (!verdicts[r].empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("custom all-reduce: rank ", r, ": ", verdicts[r]));
    }
  }

  kernels::PeerAllReduceParams& p = car->params_;
  p.rank = rank;
  p.world = world;
  for (int r = 0; r < world; ++r) {
    p.staging[r] = r == rank ? car->staging_ : car->peers_[r].staging;
    p.signals[r] = static_cast<kernels::PeerAllReduceSignal*>(r == rank ? car->signal_
                                                                        : car->peers_[r].signal);
  }
  p.staging_bytes = car->max_bytes_;
  p.max_blocks = kernels::kPeerAllReduceBlocks;
  return car;
}

CustomAllReduce::~CustomAllReduce() { Release(); }

void CustomAllReduce::Release() {
  if (aborted_.load()) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device_);
  for (PeerMapping& map : peers_) {
    if (!map.opened_ipc) continue;
    if (map.staging != nullptr) cudaIpcCloseMemHandle(map.staging);
    if (map.signal != nullptr) cudaIpcCloseMemHandle(map.signal);
  }
  if (staging_ != nullptr) cudaFree(staging_);
  if (signal_ != nullptr) cudaFree(signal_);
  if (abort_ != nullptr) cudaFreeHost(abort_);
  cudaSetDevice(previous);
}

bool CustomAllReduce::Takes(const TensorView& data) const {
  return data.device == Device::kCuda && data.is_contiguous() &&
         (data.dtype == DType::kF32 || data.dtype == DType::kBF16) && data.nbytes() <= max_bytes_;
}

bool CustomAllReduce::AllReduce(const TensorView& data, cudaStream_t stream) {
  if (!Takes(data)) return false;
  kernels::PeerAllReduceParams p = params_;
  p.data = data.data;
  p.n = data.numel();
  p.type = data.dtype == DType::kBF16 ? kernels::ElemType::kBF16 : kernels::ElemType::kF32;
  p.two_shot = kernels::PeerAllReduceTwoShot(data.nbytes(), world_);
  kernels::PeerAllReduce(p, stream);
  return true;
}

void CustomAllReduce::Abort() {
  if (aborted_.exchange(true)) return;
  *static_cast<volatile uint32_t*>(abort_) = 1;
}

}  // namespace dsv3
