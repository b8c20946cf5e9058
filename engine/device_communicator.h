// The communicator a rank's model runs its collectives on. Host backends (CPU) use the group's
// host communicator (gloo) directly; the CUDA backend in a group of several ranks gets NCCL on
// the backend's stream, so that all-reduces order with its kernels and never pass through host
// memory. Either way the step plan broadcast and barriers stay on gloo (NCCL forwards them).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/parallel/rank_group.h"

namespace dsv3 {

// Null when the group's host communicator serves `backend` as it is.
absl::StatusOr<std::unique_ptr<Communicator>> MakeDeviceCommunicator(Backend& backend,
                                                                     RankGroup& group);

}  // namespace dsv3
