// How fast distributed shared memory moves bulk copies between the two blocks of 2-CTA clusters,
// every SM at once, against bulk copies from an L2-resident buffer into shared memory: the
// question that decides whether a prefill grouped GEMM can forward half of each weight box from
// one block of a pair to the other instead of both asking L2 for it (docs/perf/h200.md, "What is
// next"; the design in docs/journal/2026-12-06-session-37.md).
//
// One block per SM (its shared memory takes most of the SM), clusters of two. Per round each
// block arms `stages` stage barriers for `chunk` bytes each and issues `stages` bulk copies of
// `chunk` bytes: in "dsmem" mode from its own shared memory into the other block's stage s
// (cp.async.bulk.shared::cluster.shared::cta, completing on the other block's barrier s), in
// "l2" mode from an 8 MB global buffer (L2-resident after the warm-up) into its own stage s.
// "forward" mode is the GEMM's pattern: each stage's chunk comes from L2 into the block's own
// half of the stage, and once landed the block copies it on into the other block's second half,
// so every stage ends holding 2 x chunk bytes of which each L2 delivered one; "l2 x2" is the
// same 2 x chunk bytes per stage all read from L2. Then each block waits for its stages and the
// cluster synchronizes, so no copy of the next round can complete on a barrier phase of this
// one. Reported: bytes landed in shared memory per second over all SMs.
//
// Built as dsv3-dsmem-bench with the CUDA backend (tools/CMakeLists.txt).
// Usage: dsv3-dsmem-bench [--chunk BYTES] [--stages N] [--rounds N]
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/launch_check.h"
#include "kernels/sm90_async.cuh"
#include "tools/dsv3-bench/cuda_timing.cuh"

namespace {

namespace cg = cooperative_groups;
using dsv3::kernels::MbarExpectTx;
using dsv3::kernels::MbarInit;
using dsv3::kernels::MbarWait;
using dsv3::kernels::BulkCopyToCluster;
using dsv3::kernels::ClusterSmemAddr;
using dsv3::kernels::SmemAddr;

constexpr int kMaxStages = 16;
enum class Mode { kDsmem, kL2, kForward };
constexpr int64_t kL2Bytes = 8 << 20;  // the "l2" mode's source, well inside L2

// The shared-memory address `local` as the other block of this block's cluster of two sees it.
__device__ __forceinline__ uint32_t PeerAddr(uint32_t local) {
  return ClusterSmemAddr(local, cg::this_cluster().block_rank() ^ 1);
}

__device__ __forceinline__ void CopyFromGlobal(uint32_t dst, const uint8_t* src, int64_t bytes,
                                               uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(dst),
      "l"(src), "r"(static_cast<uint32_t>(bytes)), "r"(bar)
      : "memory");
}

// One "forward" round by thread 0: every stage's own half from L2, each passed on to the other
// block's second half as soon as it lands; returns when this block's stages hold both halves.
__device__ void ForwardRound(const uint8_t* global_src, int64_t chunk, int stages, int r,
                             int64_t blocks_per_l2, uint32_t stage0, uint64_t* full,
                             uint64_t* landed) {
  const uint32_t second = stage0 + static_cast<uint32_t>(stages * chunk);
  for (int s = 0; s < stages; ++s) {
    MbarExpectTx(SmemAddr(&landed[s]), static_cast<uint32_t>(chunk));
    MbarExpectTx(SmemAddr(&full[s]), static_cast<uint32_t>(chunk));  // the other's half
    const int64_t block = (blockIdx.x * int64_t{stages} + s + r) % blocks_per_l2;
    CopyFromGlobal(stage0 + s * chunk, global_src + block * chunk, chunk, SmemAddr(&landed[s]));
  }
  for (int s = 0; s < stages; ++s) {
    MbarWait(SmemAddr(&landed[s]), r & 1);
    BulkCopyToCluster(PeerAddr(second + static_cast<uint32_t>(s * chunk)),
                      stage0 + static_cast<uint32_t>(s * chunk), static_cast<uint32_t>(chunk),
                      PeerAddr(SmemAddr(&full[s])));
  }
  for (int s = 0; s < stages; ++s) MbarWait(SmemAddr(&full[s]), r & 1);
}

// Shared memory: [stages][chunk] stages, then the source chunk (in "forward" mode a second
// [stages][chunk] for the halves from the other block), then the stages' barriers.
__global__ void __cluster_dims__(2, 1, 1)
    CopyRounds(Mode mode, const uint8_t* global_src, int64_t chunk, int stages, int rounds) {
  extern __shared__ __align__(1024) uint8_t smem[];
  __shared__ __align__(8) uint64_t full[kMaxStages];
  __shared__ __align__(8) uint64_t landed[kMaxStages];  // "forward": the own half from L2
  const uint32_t stage0 = SmemAddr(smem), src = stage0 + stages * chunk;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      MbarInit(SmemAddr(&full[s]), 1);
      MbarInit(SmemAddr(&landed[s]), 1);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  cg::this_cluster().sync();  // both blocks' barriers exist before either copies
  const int64_t blocks_per_l2 = kL2Bytes / chunk;
  for (int r = 0; r < rounds; ++r) {
    if (threadIdx.x == 0) {
      if (mode == Mode::kForward) {
        ForwardRound(global_src, chunk, stages, r, blocks_per_l2, stage0, full, landed);
        continue;
      }
      for (int s = 0; s < stages; ++s) {
        const uint32_t bar = SmemAddr(&full[s]), dst = stage0 + s * chunk;
        MbarExpectTx(bar, static_cast<uint32_t>(chunk));
        if (mode == Mode::kDsmem) {
          BulkCopyToCluster(PeerAddr(dst), src, static_cast<uint32_t>(chunk), PeerAddr(bar));
        } else {
          const int64_t block = (blockIdx.x * int64_t{stages} + s + r) % blocks_per_l2;
          CopyFromGlobal(dst, global_src + block * chunk, chunk, bar);
        }
      }
      for (int s = 0; s < stages; ++s) MbarWait(SmemAddr(&full[s]), r & 1);
    }
    cg::this_cluster().sync();
  }
}

int ArgInt(int argc, char** argv, const char* name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t chunk = ArgInt(argc, argv, "--chunk", 16384);
  const int stages = ArgInt(argc, argv, "--stages", 4);
  const int rounds = ArgInt(argc, argv, "--rounds", 400);
  if (chunk % 16 != 0 || chunk <= 0 || stages < 1 || stages > kMaxStages || rounds < 1) {
    std::fprintf(stderr, "--chunk must be a positive multiple of 16, --stages 1 to %d\n",
                 kMaxStages);
    return 2;
  }
  int sms = 0;
  DSV3_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  // The largest layout: "forward"'s two halves per stage.
  const size_t smem = static_cast<size_t>(2 * stages + 1) * chunk + 1024;
  DSV3_CUDA_CHECK(cudaFuncSetAttribute(CopyRounds, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
  uint8_t* global_src = nullptr;
  DSV3_CUDA_CHECK(cudaMalloc(&global_src, kL2Bytes));
  DSV3_CUDA_CHECK(cudaMemset(global_src, 1, kL2Bytes));
  // Clusters of two, one block per SM, as many as can be resident at once (a GPC of an odd
  // number of free SMs leaves one idle), so that every block runs in the first wave.
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(sms / 2 * 2);
  config.blockDim = dim3(128);
  config.dynamicSmemBytes = smem;
  int clusters = 0;
  DSV3_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, CopyRounds, &config));
  const int blocks = std::min(sms / 2, clusters) * 2;
  cudaDeviceProp prop;
  DSV3_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, %d blocks, chunk %lld B, %d stages, %d rounds\n", prop.name,
              sms, blocks, static_cast<long long>(chunk), stages, rounds);
  std::printf("| mode | us per launch | TB/s over all SMs | GB/s per SM |\n|---|---|---|---|\n");
  struct Row {
    const char* name;
    Mode mode;
    int64_t chunk;  // per copy; "forward" lands 2 x chunk per stage
    int64_t landed_per_stage;
  };
  const Row rows[] = {{"dsmem (SM to SM)", Mode::kDsmem, chunk, chunk},
                      {"l2 (to SM)", Mode::kL2, chunk, chunk},
                      {"forward (half l2, half SM to SM)", Mode::kForward, chunk, 2 * chunk},
                      {"l2 x2 (both halves from l2)", Mode::kL2, 2 * chunk, 2 * chunk}};
  for (const Row& row : rows) {
    const double us = dsv3::bench::TimeUs(2, 10, [&](int) {
      CopyRounds<<<blocks, 128, smem>>>(row.mode, global_src, row.chunk, stages, rounds);
    });
    DSV3_CUDA_CHECK(cudaGetLastError());
    const double bytes = static_cast<double>(blocks) * stages * row.landed_per_stage * rounds;
    std::printf("| %s | %.1f | %.2f | %.1f |\n", row.name, us, bytes / us / 1e6,
                bytes / blocks / us / 1e3);
  }
  DSV3_CUDA_CHECK(cudaFree(global_src));
  return 0;
}
