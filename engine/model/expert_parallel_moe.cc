#include "engine/model/expert_parallel_moe.h"

#include <cassert>
#include <numeric>
#include <vector>

#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

// Which rows go where, in destination order: the rows for rank 0, then those for rank 1, ...
struct CompactedLayout {
  std::vector<int32_t> tokens;     // [sent] the token of each row
  std::vector<int32_t> ids;        // [sent, k] its top-k ids
  std::vector<int64_t> send_rows;  // [world] rows to each rank
};

CompactedLayout PlanDispatch(const std::vector<int32_t>& topk_ids, int64_t t, int64_t k,
                             int world, int64_t experts_per_rank) {
  CompactedLayout layout;
  layout.send_rows.assign(world, 0);
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

// The owner's half and the combine's transfer, common to both layouts: this rank's experts over
// the rows it received (recv_x [R, H], recv_ids and recv_weights [R, k]; recv_rows[s] of them
// from rank s, in rank order), whose F32 partial sums [R, H] (unrounded until the residual add,
// as every branch is) go back the way their rows came, into back [sum(send_rows), H]:
// send_rows[d] rows from rank d, in rank order.
absl::Status ExpertsAndReturn(Backend& backend, Communicator& comm,
                              const ExpertParallelMoeArgs& args, const TensorView& recv_x,
                              const TensorView& recv_ids, const TensorView& recv_weights,
                              std::span<const int64_t> recv_rows,
                              std::span<const int64_t> send_rows, const TensorView& back) {
  Tensor partial(backend.allocator(), DType::kF32, {recv_x.dim(0), recv_x.dim(1)});
  backend.MoeExperts(recv_x, recv_ids, recv_weights, args.experts, args.expert_begin, partial);
  return comm.AllToAllV(partial, recv_rows, back, send_rows);
}

absl::Status CompactedMoe(Backend& backend, Communicator& comm, const ExpertParallelMoeArgs& args,
                          const TensorView& out) {
  Allocator* alloc = backend.allocator();
  const int world = comm.world_size(), me = comm.rank();
  const int64_t t = args.x.dim(0), h = args.x.dim(1), k = args.topk_ids.dim(1);

  std::vector<int32_t> host_ids(t * k);  // [T, k]
  backend.CopyToHost(args.topk_ids, host_ids.data());
  const CompactedLayout layout = PlanDispatch(host_ids, t, k, world, args.num_experts / world);

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

  // Combine: back [sent, H] in destination order, so each token's partials are added in rank
  // order.
  Tensor back(alloc, DType::kF32, {sent, h});
  DSV3_RETURN_IF_ERROR(ExpertsAndReturn(backend, comm, args, recv_x, recv_ids, recv_weights,
                                        recv_rows, layout.send_rows, back));
  backend.ScatterSumRows(back, layout.tokens, out);
  return absl::OkStatus();
}

absl::Status FixedCapacityMoe(Backend& backend, Communicator& comm,
                              const ExpertParallelMoeArgs& args, const TensorView& out) {
  Allocator* alloc = backend.allocator();
  const int world = comm.world_size();
  const int64_t h = args.x.dim(1), k = args.topk_ids.dim(1), c = args.capacity;
  assert(args.x.dim(0) <= c);
  // Every rank is idle this step (every rank knows C = 0, so all skip alike).
  if (c == 0) return absl::OkStatus();

  // This rank's block, padded to C rows: hidden [C, H] (zero rows), ids [C, k] (-1: nobody's
  // expert), weights [C, k] (0).
  Tensor block_x(alloc, args.x.dtype, {c, h});
  Tensor block_ids(alloc, DType::kI32, {c, k});
  Tensor block_weights(alloc, DType::kF32, {c, k});
  backend.PadRows(args.x, 0.0f, block_x);
  backend.PadRows(args.topk_ids, -1.0f, block_ids);
  backend.PadRows(args.topk_weights, 0.0f, block_weights);
  // Dispatch: every rank gets the same block, so each is an AllGather: [world * C, ...], rank s's
  // block at rows [s * C, (s + 1) * C).
  Tensor recv_x(alloc, args.x.dtype, {world * c, h});
  Tensor recv_ids(alloc, DType::kI32, {world * c, k});
  Tensor recv_weights(alloc, DType::kF32, {world * c, k});
  DSV3_RETURN_IF_ERROR(comm.AllGather(block_x, recv_x));
  DSV3_RETURN_IF_ERROR(comm.AllGather(block_ids, recv_ids));
  DSV3_RETURN_IF_ERROR(comm.AllGather(block_weights, recv_weights));

  // Combine: back [world * C, H], owner d's partials of this rank's block at rows [d * C,
  // (d + 1) * C); token t's are added in rank order, its padding rows dropped.
  const std::vector<int64_t> blocks(world, c);
  Tensor back(alloc, DType::kF32, {world * c, h});
  DSV3_RETURN_IF_ERROR(ExpertsAndReturn(backend, comm, args, recv_x, recv_ids, recv_weights,
                                        blocks, blocks, back));
  backend.SumRowBlocks(back, world, out);
  return absl::OkStatus();
}

}  // namespace

DispatchLayout ChooseDispatchLayout(int64_t capacity) {
  return capacity >= 0 && capacity <= kFixedCapacityMaxTokens ? DispatchLayout::kFixedCapacity
                                                              : DispatchLayout::kCompacted;
}

absl::Status ExpertParallelMoe(Backend& backend, Communicator& comm,
                               const ExpertParallelMoeArgs& args, const TensorView& out) {
  assert(args.topk_ids.is_contiguous() && args.topk_weights.is_contiguous());
  assert(out.dtype == DType::kF32);
  return args.layout == DispatchLayout::kFixedCapacity ? FixedCapacityMoe(backend, comm, args, out)
                                                       : CompactedMoe(backend, comm, args, out);
}

}  // namespace dsv3
