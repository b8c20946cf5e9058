#include "engine/device_communicator.h"

#if defined(DSV3_HAVE_NCCL)
#include "engine/parallel/nccl/nccl_communicator.h"
#endif

namespace dsv3 {

absl::StatusOr<std::unique_ptr<Communicator>> MakeDeviceCommunicator(Backend& backend,
                                                                     RankGroup& group) {
  if (backend.device() == Device::kCpu || group.world_size() == 1) return nullptr;
#if defined(DSV3_HAVE_NCCL)
  if (backend.device() == Device::kCuda && backend.device_stream() != nullptr) {
    NcclOptions options;
    options.local_rank = group.config().local_rank;
    options.cuda_stream = backend.device_stream();
    options.rendezvous_timeout = group.config().startup_timeout;
    options.custom_all_reduce = group.config().custom_all_reduce;
    return CreateNcclCommunicator(group.store(), group.communicator(), options);
  }
#endif
  return absl::UnimplementedError("tensor parallelism on the " + backend.name() +
                                  " backend: this build has no collectives for its memory");
}

}  // namespace dsv3
