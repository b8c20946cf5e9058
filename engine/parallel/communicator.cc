#include "engine/parallel/communicator.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dsv3 {

int64_t RowBytes(const TensorView& t) {
  int64_t bytes = DTypeSize(t.dtype);
  for (int i = 1; i < t.ndim; ++i) bytes *= t.shape[i];
  return bytes;
}

absl::Status CheckAllToAllV(const char* who, int world_size, const TensorView& send,
                            std::span<const int64_t> send_rows, const TensorView& recv,
                            std::span<const int64_t> recv_rows) {
  const auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, ": all-to-all of ", send.ShapeString(), " rows [", absl::StrJoin(send_rows, ", "),
        "] into ", recv.ShapeString(), " rows [", absl::StrJoin(recv_rows, ", "), "] across ",
        world_size, " ranks: ", what));
  };
  if (static_cast<int>(send_rows.size()) != world_size ||
      static_cast<int>(recv_rows.size()) != world_size) {
    return fail("the counts need one entry per rank");
  }
  if (send.ndim < 1 || recv.ndim < 1) return fail("tensors need a row dimension");
  if (send.dtype != recv.dtype || RowBytes(send) != RowBytes(recv)) {
    return fail("send and recv rows differ in dtype or size");
  }
  for (std::span<const int64_t> counts : {send_rows, recv_rows}) {
    for (int64_t c : counts) {
      if (c < 0) return fail("a count is negative");
    }
  }
  if (std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0}) != send.dim(0) ||
      std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0}) != recv.dim(0)) {
    return fail("the counts do not add up to the tensors' rows");
  }
  return absl::OkStatus();
}

}  // namespace dsv3
