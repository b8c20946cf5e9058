// The prefill grouped FP8 GEMM (fp8_grouped_gemm.cuh) in clusters of two blocks that share each
// weight box. The plain kernel (fp8_grouped_gemm.cu) is bound by the L2's traffic: every block
// asks L2 for its item's whole 256 x 128-byte weight box per k-block (32 KB) beside its 8 KB
// of activations, and ~40% of those sectors cross the fabric between the L2's two partitions
// (docs/perf/h200.md, "What is next"). Here the two blocks of a cluster (two SMs of one GPC)
// take two tiles of one expert against the same 256 columns: each block loads one 128-row half
// of the weight box from L2 and passes it on to the other block's stage by a bulk copy through
// distributed shared memory, so per stage each SM asks L2 for 24 KB instead of 40.
//
// Per stage, block r of the pair:
//   producer (warp 0): waits the stage's empty barrier, arms full for A and the other block's
//     half (24 KB), loads A onto full and its own half (rows [128 r, +128) of the box) onto
//     landed, and copies the scales as the plain kernel does;
//   forwarder (warp 1): waits landed, bulk-copies the half into the other block's same stage,
//     completing on that block's full barrier, then arrives on its own full barrier;
//   consumers: as the plain kernel's, but each warp releases the stage in both blocks (empty
//     counts 16 arrivals), so neither producer refills a stage the other block still reads or
//     is still being forwarded into.
// An expert with an odd number of tiles leaves one tile: for it the cluster takes two adjacent
// column blocks, one per block, each loading its whole box as the plain kernel does (the
// forwarder then only arrives), so both blocks still walk the same stages. The order of the
// cluster items: DecodeGroupedPairItem (kernels/grouped_gemm_schedule.h).
#include <cooperative_groups.h>
#include <cuda.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstdint>

#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/fp8_grouped_gemm_tile.cuh"
#include "kernels/launch.cuh"
#include "kernels/tensor_map.cuh"

namespace dsv3::kernels {

using namespace grouped_gemm;  // NOLINT: this file is a kernel made of those pieces

namespace {

namespace cg = cooperative_groups;

constexpr int kHalfRows = kBN / 2;      // weight rows per block of a pair (one consumer's)
constexpr int kHalfBytes = kBTile / 2;  // 16 KB
using PairsRegisters = RegisterSplit<kConsumers, 56, 224>;

// The shared-memory address `local` has in the other block of this block's cluster.
__device__ __forceinline__ uint32_t PeerAddr(uint32_t local, int rank) {
  return ClusterSmemAddr(local, static_cast<uint32_t>(rank ^ 1));
}

struct Stages {
  int stage = 0;
  uint32_t phase = 0;
  __device__ void Next() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// The producer warp (see the file's header); half_w / half_wb: the weight windows in boxes of
// kHalfRows rows.
template <class DecodeFn>
__device__ void ProducePairs(const GroupedMaps& maps, const CUtensorMap& half_w,
                             const CUtensorMap& half_wb, const Fp8GroupedGemmParams& p,
                             const SharedLayout& sh, const ItemWalk& walk, DecodeFn decode,
                             int rank) {
  const int lane = threadIdx.x % 32;
  const int64_t kblocks = p.k_pad / kBK;
  Stages at;
  for (int64_t c = walk.first; c < walk.end; c += walk.step) {
    const GroupedPairItem pi = decode(c);
    const ItemLoads loads(p, pi.item, lane);
    for (int64_t kb = 0; kb < kblocks; ++kb, at.Next()) {
      MbarWait(sh.empty0 + 8 * at.stage, at.phase ^ 1);  // a fresh barrier passes parity 1
      const uint32_t full = sh.full0 + 8 * at.stage;
      if (lane == 0) {
        const uint32_t sa = SmemAddr(sh.stages + at.stage * kStageBytes);
        MbarExpectTx(full, pi.forward ? kATile + kHalfBytes : kStageBytes);
        TmaLoad2d(sa, maps.x, full, static_cast<int32_t>(kb * kBK),
                  static_cast<int32_t>(pi.item.tile * kBM));
        if (pi.forward) {
          const uint32_t landed = sh.landed0 + 8 * at.stage;
          MbarExpectTx(landed, kHalfBytes);
          loads.LoadWeights(sa + kATile + rank * kHalfBytes,
                            loads.k_block_major ? half_wb : half_w, landed, kb,
                            pi.item.col0 + rank * kHalfRows);
        } else {
          loads.LoadWeights(sa + kATile, loads.k_block_major ? maps.wb : maps.w, full, kb,
                            pi.item.col0);
        }
      }
      loads.LoadScales(p, SmemAddr(sh.scales + at.stage * kScaleSlot), full, kb, lane);
    }
  }
  asm volatile("cp.async.wait_all;" ::: "memory");
}

// The forwarder (one thread, see the file's header). It waits for each stage's empty barrier
// too, so that its arrival on full never lands in the phase before the stage's current one.
template <class DecodeFn>
__device__ void Forward(const Fp8GroupedGemmParams& p, const SharedLayout& sh,
                        const ItemWalk& walk, DecodeFn decode, int rank) {
  const int64_t kblocks = p.k_pad / kBK;
  uint32_t landed_phase = 0;  // bit s: the parity landed barrier s completes next
  Stages at;
  for (int64_t c = walk.first; c < walk.end; c += walk.step) {
    const bool forward = decode(c).forward;
    for (int64_t kb = 0; kb < kblocks; ++kb, at.Next()) {
      MbarWait(sh.empty0 + 8 * at.stage, at.phase ^ 1);
      const uint32_t full = sh.full0 + 8 * at.stage;
      if (forward) {
        MbarWait(sh.landed0 + 8 * at.stage, (landed_phase >> at.stage) & 1);
        landed_phase ^= 1u << at.stage;
        const uint32_t half =
            SmemAddr(sh.stages + at.stage * kStageBytes) + kATile + rank * kHalfBytes;
        BulkCopyToCluster(PeerAddr(half, rank), half, kHalfBytes, PeerAddr(full, rank));
      }
      MbarArrive(full);
    }
  }
}

__global__ void __launch_bounds__(kThreads, 1)
    Fp8GroupedGemmPairsKernel(const __grid_constant__ GroupedMaps maps,
                              const __grid_constant__ CUtensorMap half_w,
                              const __grid_constant__ CUtensorMap half_wb,
                              const Fp8GroupedGemmParams p) {
  KernelPrologue();
  extern __shared__ uint8_t smem_raw[];
  const SharedLayout sh(smem_raw);
  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      MbarInit(sh.full0 + 8 * s, 32 + 1 + 1);           // lanes, expect_tx, the forwarder
      MbarInit(sh.empty0 + 8 * s, 2 * 4 * kConsumers);  // both blocks' consumer warps
      MbarInit(sh.landed0 + 8 * s, 1);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  cluster.sync();  // both blocks' barriers exist before either arrives remotely
  const int64_t blocks_per_mat = p.n / kBN, blocks = p.mats * blocks_per_mat;
  const int64_t num_tiles = TilesInUse(p);
  const int64_t clusters = gridDim.x / 2;
  const ItemWalk walk{blockIdx.x / 2, num_tiles * blocks / 2, clusters};
  auto decode = [&](int64_t c) {
    return DecodeGroupedPairItem(c, rank, p.tile_expert, num_tiles, blocks_per_mat, blocks);
  };
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    // 56 and 224, not the plain kernel's 40 and 232: the producer's pair state spills in 40.
    PairsRegisters::Producer();
    if (threadIdx.x < 32) {
      ProducePairs(maps, half_w, half_wb, p, sh, walk, decode, rank);
    } else if (threadIdx.x == 32) {
      Forward(p, sh, walk, decode, rank);
    }
  } else {
    PairsRegisters::Consumer();
    auto release = [rank](uint32_t empty) {
      MbarArrive(empty);
      MbarArriveCluster(PeerAddr(empty, rank));
    };
    Consume(p, maps.y, maps.y_tma, sh.stages, sh.scales, sh.epi, sh.full0, sh.empty0, walk,
            [&](int64_t c) { return decode(c).item; }, release, wg - 1);
  }
  // Neither block leaves while the other may still copy into its stages or arrive on its
  // barriers.
  cluster.sync();
}

// Clusters of two resident at once with this kernel's shared memory on `device` (asked once
// per device: tensor-parallel ranks may be threads of one process, a GPU each).
int MaxActiveClusters(int device, int sms) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cached[kMaxDevices] = {};
  std::atomic<int>* slot = device < kMaxDevices ? &cached[device] : nullptr;
  if (slot != nullptr && slot->load() > 0) return slot->load();
  cudaLaunchAttribute cluster_dim{};
  cluster_dim.id = cudaLaunchAttributeClusterDimension;
  cluster_dim.val.clusterDim = {2, 1, 1};
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(sms / 2 * 2);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = kSmemBytes;
  config.attrs = &cluster_dim;
  config.numAttrs = 1;
  int clusters = 0;
  DSV3_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, Fp8GroupedGemmPairsKernel, &config));
  clusters = std::max(clusters, 1);
  if (slot != nullptr) slot->store(clusters);
  return clusters;
}

}  // namespace

bool ForwardPairsFit(const Fp8GroupedGemmParams& p) {
  return p.n % kBN == 0 && p.mats * (p.n / kBN) % 2 == 0;
}

void grouped_gemm::LaunchForwardPairs(const Fp8GroupedGemmParams& p, const GroupedMaps& maps,
                                      cudaStream_t stream) {
  assert(ForwardPairsFit(p));
  CUtensorMap half_w, half_wb;
  EncodeWeightMaps(p, kHalfRows, &half_w, &half_wb);
  int device = 0, sms = 0;
  DSV3_CUDA_CHECK(cudaGetDevice(&device));
  DSV3_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DSV3_CUDA_CHECK(cudaFuncSetAttribute(Fp8GroupedGemmPairsKernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const int64_t cluster_items = p.num_tiles * p.mats * (p.n / kBN) / 2;
  const int clusters =
      static_cast<int>(std::min<int64_t>(cluster_items, MaxActiveClusters(device, sms)));
  LaunchInClusters(Fp8GroupedGemmPairsKernel, 2 * clusters, kThreads, kSmemBytes, stream, 2,
                   maps, half_w, half_wb, p);
}

}  // namespace dsv3::kernels
