// The routed experts of one MoE layer under expert parallelism with data-parallel attention
// (--dp-attention): every rank holds n_routed_experts / world experts (rank r owns
// [r * E_local, (r + 1) * E_local)) and has its own tokens, already routed by the replicated
// gate. Per layer, on every rank, in this order (every rank makes the same collectives, an idle
// rank with zero tokens included, so nobody waits for a peer that skipped one):
//   1. layout: token t goes to rank d once when any of its top-k experts is d's; the tokens for
//      d keep their order (ascending t);
//   2. count exchange: an AllGather of each rank's per-destination row counts;
//   3. dispatch: one AllToAllV of rows [hidden | top-k ids | top-k weights] (F32);
//   4. the owner runs MoeExperts over the rows it received: each row's weighted sum over the
//      experts it owns (the other ids of the row are some other rank's);
//   5. combine: one AllToAllV returns those partial sums to their tokens' ranks;
//   6. the source rank adds the partial sums of each token in rank order: a fixed order, so the
//      result is deterministic and equals one rank's sum up to float reassociation.
// Host tensors only for now (the CPU backend): the layout is built on the host from the routing.
// A GPU version keeps the same collectives but builds the layout on the device.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "engine/backend/backend.h"
#include "engine/parallel/communicator.h"

namespace dsv3 {

struct ExpertParallelMoeArgs {
  TensorView x;             // [T, H] F32, this rank's tokens (host)
  TensorView topk_ids;      // [T, k] I32, global expert ids
  TensorView topk_weights;  // [T, k] F32
  std::span<const ExpertWeights> experts;  // this rank's, global ids from expert_begin
  int64_t expert_begin = 0;
  int64_t num_experts = 0;  // E over all ranks (a multiple of comm.world_size())
};

// Writes the routed experts' weighted sum for every token of `args.x` into `out` ([T, H] F32,
// host). Fails only when a collective fails (a peer died or timed out).
absl::Status ExpertParallelMoe(Backend& backend, Communicator& comm,
                               const ExpertParallelMoeArgs& args, const TensorView& out);

}  // namespace dsv3
