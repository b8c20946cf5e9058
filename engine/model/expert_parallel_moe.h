// The routed experts of one MoE layer under expert parallelism with data-parallel attention
// (--dp-attention): every rank holds n_routed_experts / world experts (rank r owns
// [r * E_local, (r + 1) * E_local)) and has its own T tokens, already routed by the replicated
// gate. Every rank makes the same collectives in the same order, an idle rank (T = 0) included,
// so nobody waits for a peer that skipped one; so every rank must pick the same layout, from
// what all ranks know alike (the step's capacity C, below).
//
// Two dispatch layouts share the owner's half and the combine's order:
// - Compacted (prefill-sized steps): a token goes to each rank that owns one of its experts,
//   once. Per layer:
//   1. layout: the top-k ids come to the host (on a GPU one small synchronous copy per layer),
//      and token t goes to rank d once when any of its top-k experts is d's; the tokens for d
//      keep their order (ascending t);
//   2. count exchange: an AllGather of each rank's per-destination row counts (which the
//      AllToAllVs need on the host; a second synchronization on a GPU);
//   3. dispatch: three AllToAllVs of the same rows: hidden [rows, H] in x's type (the
//      activation type: BF16 on GPUs, what MoeExperts quantizes, so no rounding is added),
//      top-k ids [rows, k] I32 and top-k weights [rows, k] F32. Apart, each lands in the
//      contiguous layout MoeExperts reads (the GPU's grouped kernels take the ids contiguous)
//      with no pack or unpack kernel; the ids and weights are small, so their two transfers
//      cost latency only;
//   then the owner's half and the combine (4-5 below), and ScatterSumRows adds each token's
//   partial sums in rank order.
// - Fixed capacity (decode-sized steps, C <= kFixedCapacityMaxTokens): every rank sends every
//   rank, itself included, the same block of exactly C rows, C = the most tokens any rank has in
//   this step (from the step plan, which every rank has). Row t of the block is token t's hidden
//   row, top-k ids and weights, unmodified; rows [T, C) are padding: zero hidden rows, weights 0
//   and ids -1, an id no rank owns, which MoeExperts skips on every backend (it takes only ids in
//   [expert_begin, expert_begin + local experts)), so no owner computes a padding row. Since the
//   block is the same for every destination, the dispatch is three AllGathers of [C, ...]
//   (received [world * C, ...], rank s's block at rows [s * C, (s + 1) * C)); the owner runs
//   MoeExperts over all world * C rows (a row none of whose experts is local gives an exact zero
//   partial), the combine's AllToAllV moves C rows each way, and SumRowBlocks adds the world
//   partials of token t in rank order from zero. Nothing is read back on the host and every size
//   is known before the step (PadRows and SumRowBlocks take sizes only), so on a GPU the layer
//   has no host synchronization and could be captured in a CUDA graph. The non-owners' zeros
//   change no sum (x + 0 == x, and a sum from +0 is never -0), so on the CPU this layout's result
//   equals the compacted one's bit for bit.
// Shared by both, after the dispatch:
//   4. the owner runs MoeExperts over the rows it received: each row's weighted sum over the
//      experts it owns (the other ids of the row are some other rank's), in F32;
//   5. combine: one AllToAllV returns those F32 partial sums to their tokens' ranks, and each
//      token's partials are added in rank order from zero: a fixed order, so the result is
//      deterministic and equals one rank's sum up to float reassociation.
// Rows each rank sends per layer, each way (hidden rows out in the activation type, F32 partials
// back): compacted, T times the ranks a token reaches, at most min(k, world); fixed capacity,
// world * C. DeepSeek-V3 routes a token's k = 8 experts within its top 4 of 8 groups of 32
// experts; on 8 ranks each rank owns one group, so a token reaches at most 4 ranks and even
// loads (C = T) cost about 2x the compacted bytes (about 1x on 2 ranks); a rank with fewer
// tokens than C also sends padding. Decode messages are small and latency-bound, where
// the host round trips cost more than the extra bytes; prefill's are large and
// bandwidth-bound, and its ranks' loads are uneven, hence the compacted layout above
// kFixedCapacityMaxTokens (also the GPU's small-M expert kernel's and decode graphs' range).
//
// The compacted layout synchronizes a device backend twice per layer, so a step that takes it
// cannot be captured in a CUDA graph. Data-parallel decode steps go through the decode graph
// runner at one shape every rank shares (ForwardDataParallel, DataParallelGraphShape), whose
// rows are C, so they take the fixed-capacity layout; other steps run eagerly.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "engine/backend/backend.h"
#include "engine/parallel/communicator.h"

namespace dsv3 {

enum class DispatchLayout { kCompacted, kFixedCapacity };

// The most tokens per rank a step may have for the fixed-capacity layout.
inline constexpr int64_t kFixedCapacityMaxTokens = 256;

// The layout of a step whose ranks have at most `capacity` tokens each (-1: not known, as for a
// batch that was not split by attention rank): fixed capacity when 0 <= capacity <=
// kFixedCapacityMaxTokens, else compacted. Every rank gets the same answer from the same step.
DispatchLayout ChooseDispatchLayout(int64_t capacity);

struct ExpertParallelMoeArgs {
  TensorView x;             // [T, H] activation type, this rank's tokens
  TensorView topk_ids;      // [T, k] I32, global expert ids, contiguous
  TensorView topk_weights;  // [T, k] F32, contiguous
  std::span<const ExpertWeights> experts;  // this rank's, global ids from expert_begin
  int64_t expert_begin = 0;
  int64_t num_experts = 0;  // E over all ranks (a multiple of comm.world_size())
  DispatchLayout layout = DispatchLayout::kCompacted;  // the same on every rank
  // kFixedCapacity: C, the most tokens of any rank in this step (>= T; the same on every rank).
  int64_t capacity = 0;
};

// Writes the routed experts' weighted sum for every token of `args.x` into `out` ([T, H] F32).
// Every tensor is the backend's (device memory on a GPU), and `comm` must take them (NCCL on
// the GPU, gloo on the CPU). Fails only when a collective fails (a peer died or timed out).
absl::Status ExpertParallelMoe(Backend& backend, Communicator& comm,
                               const ExpertParallelMoeArgs& args, const TensorView& out);

}  // namespace dsv3
