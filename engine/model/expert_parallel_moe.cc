#include "engine/model/expert_parallel_moe.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <numeric>
#include <vector>

#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

// Which rows go where: for each destination rank, the tokens it gets, ascending.
struct DispatchLayout {
  std::vector<std::vector<int32_t>> tokens_for;  // [world][rows to that rank]
  std::vector<int64_t> send_rows;                // [world]

  int64_t total() const {
    return std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0});
  }
};

DispatchLayout PlanDispatch(const TensorView& topk_ids, int world, int64_t experts_per_rank) {
  const int64_t t = topk_ids.dim(0), k = topk_ids.dim(1);
  DispatchLayout layout;
  layout.tokens_for.resize(world);
  std::vector<bool> wanted(world);
  for (int64_t i = 0; i < t; ++i) {
    std::fill(wanted.begin(), wanted.end(), false);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t expert = topk_ids.ptr<int32_t>()[i * topk_ids.strides[0] + j];
      wanted[expert / experts_per_rank] = true;
    }
    for (int d = 0; d < world; ++d) {
      if (wanted[d]) layout.tokens_for[d].push_back(static_cast<int32_t>(i));
    }
  }
  for (const auto& tokens : layout.tokens_for) layout.send_rows.push_back(tokens.size());
  return layout;
}

}  // namespace

absl::Status ExpertParallelMoe(Backend& backend, Communicator& comm,
                               const ExpertParallelMoeArgs& args, const TensorView& out) {
  assert(backend.device() == Device::kCpu && args.x.dtype == DType::kF32);
  const int world = comm.world_size(), me = comm.rank();
  const int64_t t = args.x.dim(0), h = args.x.dim(1), k = args.topk_ids.dim(1);
  const int64_t width = h + 2 * k;  // a dispatched row: [hidden | ids | weights], F32
  const DispatchLayout layout = PlanDispatch(args.topk_ids, world, args.num_experts / world);

  // Count exchange: counts[s * world + d] = rows rank s sends to rank d.
  std::vector<int64_t> counts(static_cast<size_t>(world) * world);
  DSV3_RETURN_IF_ERROR(comm.AllGather(
      TensorView::Contiguous(const_cast<int64_t*>(layout.send_rows.data()), DType::kI64,
                             {1, world}),
      TensorView::Contiguous(counts.data(), DType::kI64, {world, world})));
  std::vector<int64_t> recv_rows(world);
  for (int s = 0; s < world; ++s) recv_rows[s] = counts[s * world + me];
  const int64_t sent = layout.total();
  const int64_t received = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});

  // Dispatch: [sent, width] in destination order.
  std::vector<float> send(sent * width);
  float* row = send.data();
  for (int d = 0; d < world; ++d) {
    for (int32_t i : layout.tokens_for[d]) {
      std::memcpy(row, args.x.ptr<float>() + i * args.x.strides[0], h * sizeof(float));
      for (int64_t j = 0; j < k; ++j) {
        // Expert ids are below 2^24: exact in F32.
        row[h + j] = static_cast<float>(args.topk_ids.ptr<int32_t>()[i * args.topk_ids.strides[0] + j]);
        row[h + k + j] = args.topk_weights.ptr<float>()[i * args.topk_weights.strides[0] + j];
      }
      row += width;
    }
  }
  std::vector<float> recv(received * width);
  DSV3_RETURN_IF_ERROR(
      comm.AllToAllV(TensorView::Contiguous(send.data(), DType::kF32, {sent, width}),
                     layout.send_rows,
                     TensorView::Contiguous(recv.data(), DType::kF32, {received, width}),
                     recv_rows));

  // This rank's experts over the rows it received: x [R, H] and weights [R, k] are strided views
  // of the received rows; ids back to I32.
  std::vector<int32_t> ids(received * k);
  for (int64_t r = 0; r < received; ++r) {
    for (int64_t j = 0; j < k; ++j) ids[r * k + j] = static_cast<int32_t>(recv[r * width + h + j]);
  }
  TensorView x_recv = TensorView::Contiguous(recv.data(), DType::kF32, {received, h});
  x_recv.strides[0] = width;
  TensorView w_recv = TensorView::Contiguous(recv.data() + h + k, DType::kF32, {received, k});
  w_recv.strides[0] = width;
  std::vector<float> partial(received * h);  // [R, H]
  backend.MoeExperts(x_recv, TensorView::Contiguous(ids.data(), DType::kI32, {received, k}),
                     w_recv, args.experts, args.expert_begin,
                     TensorView::Contiguous(partial.data(), DType::kF32, {received, h}));

  // Combine: the partial sums go back the way their rows came.
  std::vector<float> back(sent * h);  // [sent, H] in destination order, as dispatched
  DSV3_RETURN_IF_ERROR(
      comm.AllToAllV(TensorView::Contiguous(partial.data(), DType::kF32, {received, h}),
                     recv_rows, TensorView::Contiguous(back.data(), DType::kF32, {sent, h}),
                     layout.send_rows));

  // out[t] = sum over ranks d, in rank order, of d's partial sum for t.
  for (int64_t i = 0; i < t; ++i) {
    std::fill_n(out.ptr<float>() + i * out.strides[0], h, 0.0f);
  }
  const float* part = back.data();
  for (int d = 0; d < world; ++d) {
    for (int32_t i : layout.tokens_for[d]) {
      float* o = out.ptr<float>() + i * out.strides[0];
      for (int64_t c = 0; c < h; ++c) o[c] += part[c];
      part += h;
    }
  }
  return absl::OkStatus();
}

}  // namespace dsv3
