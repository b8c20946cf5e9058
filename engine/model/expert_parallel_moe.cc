#include "engine/model/expert_parallel_moe.h"

#include <cassert>
#include <numeric>
#include <vector>

#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

// Which rows go where, in destination order: the rows for rank 0, then those for rank 1, ...
struct DispatchLayout {
  std::vector<int32_t> tokens;     // [sent] the token of each row
  std::vector<int32_t> ids;        // [sent, k] its top-k ids
  std::vector<int64_t> send_rows;  // [world] rows to each rank
};

DispatchLayout PlanDispatch(const std::vector<int32_t>& topk_ids, int64_t t, int64_t k, int world,
                            int64_t experts_per_rank) {
  DispatchLayout layout;
  layout.send_rows.assign(world, 0);
  std::vector<bool> wanted(world);
  for (int d = 0; d < world; ++d) {
    for (int64_t i = 0; i < t; ++i) {
      const int32_t* row = topk_ids.data() + i * k;
      bool goes = false;
      for (int64_t j = 0; j < k; ++j) goes = goes || row[j] / experts_per_rank == d;
      if (!goes) continue;
      layout.tokens.push_back(static_cast<int32_t>(i));
      layout.ids.insert(layout.ids.end(), row, row + k);
      ++layout.send_rows[d];
    }
  }
  return layout;
}

int64_t Sum(std::span<const int64_t> v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

}  // namespace

absl::Status ExpertParallelMoe(Backend& backend, Communicator& comm,
                               const ExpertParallelMoeArgs& args, const TensorView& out) {
  assert(args.topk_ids.is_contiguous() && args.topk_weights.is_contiguous());
  assert(out.dtype == DType::kF32);
  Allocator* alloc = backend.allocator();
  const int world = comm.world_size(), me = comm.rank();
  const int64_t t = args.x.dim(0), h = args.x.dim(1), k = args.topk_ids.dim(1);

  std::vector<int32_t> host_ids(t * k);  // [T, k]
  backend.CopyToHost(args.topk_ids, host_ids.data());
  const DispatchLayout layout = PlanDispatch(host_ids, t, k, world, args.num_experts / world);

  // Count exchange: counts[s * world + d] = rows rank s sends to rank d.
  Tensor my_counts(alloc, DType::kI64, {1, world});
  Tensor all_counts(alloc, DType::kI64, {world, world});
  backend.CopyFromHost(layout.send_rows.data(), my_counts);
  DSV3_RETURN_IF_ERROR(comm.AllGather(my_counts, all_counts));
  std::vector<int64_t> counts(static_cast<size_t>(world) * world);
  backend.CopyToHost(all_counts, counts.data());
  std::vector<int64_t> recv_rows(world);
  for (int s = 0; s < world; ++s) recv_rows[s] = counts[s * world + me];
  const int64_t sent = Sum(layout.send_rows), received = Sum(recv_rows);

  // Dispatch: the rows in destination order ([sent, ...]), received in source order
  // ([received, ...]).
  Tensor send_x(alloc, args.x.dtype, {sent, h});
  Tensor send_ids(alloc, DType::kI32, {sent, k});
  Tensor send_weights(alloc, DType::kF32, {sent, k});
  backend.GatherRows(args.x, layout.tokens, send_x);
  backend.CopyFromHost(layout.ids.data(), send_ids);
  backend.GatherRows(args.topk_weights, layout.tokens, send_weights);
  Tensor recv_x(alloc, args.x.dtype, {received, h});
  Tensor recv_ids(alloc, DType::kI32, {received, k});
  Tensor recv_weights(alloc, DType::kF32, {received, k});
  DSV3_RETURN_IF_ERROR(comm.AllToAllV(send_x, layout.send_rows, recv_x, recv_rows));
  DSV3_RETURN_IF_ERROR(comm.AllToAllV(send_ids, layout.send_rows, recv_ids, recv_rows));
  DSV3_RETURN_IF_ERROR(comm.AllToAllV(send_weights, layout.send_rows, recv_weights, recv_rows));

  // This rank's experts over the rows it received: partial [received, H] F32, unrounded until
  // the residual add as every branch is.
  Tensor partial(alloc, DType::kF32, {received, h});
  backend.MoeExperts(recv_x, recv_ids, recv_weights, args.experts, args.expert_begin, partial);

  // Combine: the partial sums go back the way their rows came ([sent, H] in destination order),
  // and each token's are added in that order, which is rank order.
  Tensor back(alloc, DType::kF32, {sent, h});
  DSV3_RETURN_IF_ERROR(comm.AllToAllV(partial, recv_rows, back, layout.send_rows));
  backend.ScatterSumRows(back, layout.tokens, out);
  return absl::OkStatus();
}

}  // namespace dsv3
