#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/parallel/communicator.h"
#include "engine/util/status_macros.h"

namespace dsv3 {

namespace {

// The copies below are host memcpys: device memory (a GPU model's tensors) needs a device
// communicator, even for one rank.
absl::Status CheckHost(const TensorView& t, const char* what) {
  if (t.device == Device::kCpu || t.nbytes() == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "single-rank communicator: ", what, " is device memory (host tensors only; a GPU model "
      "takes a device communicator, such as NCCL with one rank)"));
}

}  // namespace

absl::Status SingleRankCommunicator::AllGather(const TensorView& in, const TensorView& out) {
  if (in.data == out.data) return absl::OkStatus();
  DSV3_RETURN_IF_ERROR(CheckHost(in, "the all-gather input"));
  DSV3_RETURN_IF_ERROR(CheckHost(out, "the all-gather output"));
  std::memcpy(out.data, in.data, in.nbytes());
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
  DSV3_RETURN_IF_ERROR(CheckHost(send, "the all-to-all input"));
  DSV3_RETURN_IF_ERROR(CheckHost(recv, "the all-to-all output"));
  if (send.nbytes() > 0) std::memcpy(recv.data, send.data, send.nbytes());
  return absl::OkStatus();
}

}  // namespace dsv3
