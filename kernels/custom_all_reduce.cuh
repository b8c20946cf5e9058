// The all-reduce of small messages over peer memory (NVLink) between the GPUs of one host, for
// decode steps, where NCCL's fixed cost dominates (the host side: engine/parallel/nccl/
// custom_all_reduce.h). Every rank launches PeerAllReduce on its own stream with the same n, type
// and algorithm; each reads its peers' staging buffers directly.
//
// Numerics: every rank sums the ranks' values in F32 in rank order 0..world-1 and rounds once to
// the element type, so all ranks get bit-identical results; at two ranks that is NCCL's a + b.
//
// Algorithms (the caller picks, the same on every rank):
//  - one-shot: each rank copies its input into its staging buffer, meets the others (the start
//    barrier), then reads all ranks' staging and reduces the whole message. Each rank reads
//    (world - 1) x the message from its peers; one barrier.
//  - two-shot: the message is cut into `world` slots; rank r reduces slot r from every rank's
//    staging into its own staging (reduce-scatter), meets the others again (the middle barrier),
//    then copies every slot s from rank s's staging (all-gather). Each rank reads about 2 x the
//    message from its peers whatever the world size; two barriers.
//
// Barriers are per block: block b of every rank handles the same packs of every slot, so block b
// only ever reads what the peers' blocks b wrote. A rank's block b tells each peer it has arrived
// by a release store (system scope) of the call's number into the peer's flag array, and waits
// until every peer's store has reached its own array (acquire loads).
//
// Reuse without an end barrier: the staging buffer has two halves and call c uses half c % 2. A
// rank starts call c + 2 (and overwrites half c % 2) only after its call c + 1 has passed the
// start barrier, where every peer has started call c + 1, which it does only once its call c,
// with every read of that half, has ended.
//
// CUDA graphs: the params hold only fixed addresses; the call number lives in each rank's
// signal (device memory) and every launch advances it, so a replayed graph gets fresh flags.
// Spin-waits need every block of every rank resident at once: the grid is at most
// max_blocks blocks of kPeerAllReduceThreads threads, one GPU per rank (or, in the tests, ranks
// small enough to share one GPU).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/elem_type.h"

namespace dsv3::kernels {

inline constexpr int kPeerAllReduceMaxRanks = 8;
inline constexpr int kPeerAllReduceMaxBlocks = 64;
inline constexpr int kPeerAllReduceThreads = 512;
// The grid cap the engine uses (vLLM's on H100); dsv3-all-reduce-bench --blocks tries others.
inline constexpr int kPeerAllReduceBlocks = 36;

// Whether a message of `bytes` among `world` ranks should take the two-shot algorithm: above
// 512 KiB at 3-4 ranks and above 256 KiB at 5-8 (vLLM's cutoffs), where the one-shot's
// (world - 1) x reads cost more than a second barrier; never at 2 ranks, where both algorithms
// read the same bytes and the one-shot meets once.
constexpr bool PeerAllReduceTwoShot(int64_t bytes, int world) {
  return world > 2 && bytes > (world <= 4 ? int64_t{512} << 10 : int64_t{256} << 10);
}

// One rank's barrier state, in device memory its peers can write (an IPC-shared allocation, or
// a peer-accessible one in the same process). Zero-filled once before the first call; never
// written by the host after that.
struct PeerAllReduceSignal {
  // start[b][p]: the number (from 1) of the latest call in which rank p's block b had staged
  // its input; mid[b][p]: the same for rank p's reduced slot (two-shot). Written by rank p.
  uint32_t start[kPeerAllReduceMaxBlocks][kPeerAllReduceMaxRanks];
  uint32_t mid[kPeerAllReduceMaxBlocks][kPeerAllReduceMaxRanks];
  // Calls this rank has made, one copy per block (each block advances its own; block 0 those
  // of the blocks a smaller grid did not launch), so every block reads the same count.
  uint32_t calls[kPeerAllReduceMaxBlocks];
};

// In place: data [n] (F32 or BF16, contiguous, any element-aligned address) becomes the sum over
// ranks. staging[p] and signals[p] are rank p's (this rank's own at p == rank), as this process
// addresses them; each staging buffer holds two halves of staging_bytes (a multiple of 16, at
// least n elements).
struct PeerAllReduceParams {
  void* data;
  int64_t n;
  ElemType type;
  int rank, world;  // world in [2, kPeerAllReduceMaxRanks]
  void* staging[kPeerAllReduceMaxRanks];
  int64_t staging_bytes;
  PeerAllReduceSignal* signals[kPeerAllReduceMaxRanks];
  // Host-mapped; when non-zero every wait gives up (a peer is gone) and the result is undefined.
  const volatile uint32_t* abort;
  bool two_shot;
  int max_blocks;  // in [1, kPeerAllReduceMaxBlocks]; the same on every rank
};
void PeerAllReduce(const PeerAllReduceParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
