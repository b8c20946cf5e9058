// The routed experts of one MoE layer under expert parallelism with data-parallel attention
// (--dp-attention): every rank holds n_routed_experts / world experts (rank r owns
// [r * E_local, (r + 1) * E_local)) and has its own tokens, already routed by the replicated
// gate. Per layer, on every rank, in this order (every rank makes the same collectives, an idle
// rank with zero tokens included, so nobody waits for a peer that skipped one):
//   1. layout: the top-k ids come to the host (on a GPU one small synchronous copy per layer),
//      and token t goes to rank d once when any of its top-k experts is d's; the tokens for d
//      keep their order (ascending t);
//   2. count exchange: an AllGather of each rank's per-destination row counts (which the
//      AllToAllVs need on the host);
//   3. dispatch: three AllToAllVs of the same rows: hidden [rows, H] in x's type (the
//      activation type: BF16 on GPUs, what MoeExperts quantizes, so no rounding is added),
//      top-k ids [rows, k] I32 and top-k weights [rows, k] F32. Apart, each lands in the
//      contiguous layout MoeExperts reads (the GPU's grouped kernels take the ids contiguous)
//      with no pack or unpack kernel; the ids and weights are small, so their two transfers cost
//      latency only;
//   4. the owner runs MoeExperts over the rows it received: each row's weighted sum over the
//      experts it owns (the other ids of the row are some other rank's), in F32;
//   5. combine: one AllToAllV returns those F32 partial sums to their tokens' ranks;
//   6. ScatterSumRows adds the partial sums of each token in rank order: a fixed order, so the
//      result is deterministic and equals one rank's sum up to float reassociation.
// Host-side work (the layout, the row counts) synchronizes a device backend twice per layer, so
// a step that runs this cannot be captured in a CUDA graph: data-parallel steps run eagerly
// (ForwardDataParallel calls Forward directly). A later version builds the layout on the device.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "engine/backend/backend.h"
#include "engine/parallel/communicator.h"

namespace dsv3 {

struct ExpertParallelMoeArgs {
  TensorView x;             // [T, H] activation type, this rank's tokens
  TensorView topk_ids;      // [T, k] I32, global expert ids, contiguous
  TensorView topk_weights;  // [T, k] F32, contiguous
  std::span<const ExpertWeights> experts;  // this rank's, global ids from expert_begin
  int64_t expert_begin = 0;
  int64_t num_experts = 0;  // E over all ranks (a multiple of comm.world_size())
};

// Writes the routed experts' weighted sum for every token of `args.x` into `out` ([T, H] F32).
// Every tensor is the backend's (device memory on a GPU), and `comm` must take them (NCCL on
// the GPU, gloo on the CPU). Fails only when a collective fails (a peer died or timed out).
absl::Status ExpertParallelMoe(Backend& backend, Communicator& comm,
                               const ExpertParallelMoeArgs& args, const TensorView& out);

}  // namespace dsv3
