#include <cstring>

#include "engine/parallel/communicator.h"

namespace dsv3 {

absl::Status SingleRankCommunicator::AllGather(const TensorView& in, const TensorView& out) {
  if (in.data != out.data) std::memcpy(out.data, in.data, in.nbytes());
  return absl::OkStatus();
}

absl::Status SingleRankCommunicator::AllToAllV(const TensorView& send,
                                               std::span<const int64_t> send_rows,
                                               const TensorView& recv,
                                               std::span<const int64_t> recv_rows) {
  if (absl::Status st = CheckAllToAllV("single rank", 1, send, send_rows, recv, recv_rows);
      !st.ok()) {
    return st;
  }
  if (send.nbytes() > 0) std::memcpy(recv.data, send.data, send.nbytes());
  return absl::OkStatus();
}

}  // namespace dsv3
