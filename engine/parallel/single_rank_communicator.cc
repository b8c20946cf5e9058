#include <cstring>

#include "engine/parallel/communicator.h"

namespace dsv3 {

absl::Status SingleRankCommunicator::AllGather(const TensorView& in, const TensorView& out) {
  if (in.data != out.data) std::memcpy(out.data, in.data, in.nbytes());
  return absl::OkStatus();
}

}  // namespace dsv3
