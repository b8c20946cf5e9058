// Hopper (sm_90a) building blocks shared by the warp-specialized kernels (the prefill grouped FP8
// GEMM, the prefill and decode flash attention) and the small-M GEMM's shared-memory ring:
// shared-memory addresses, mbarriers, cp.async (into a barrier's transaction or its own
// completion groups), TMA tile loads (maps from kernels/tensor_map.cuh), wgmma descriptors,
// operands and the fences around wgmma, and the register-A BF16 wgmma both flash kernels use
// for P V. Included only by .cu files built for sm_90a.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv3::kernels {

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void MbarInit(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count));
}

__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n"
        "  .reg .pred p;\n"
        "  mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "  selp.u32 %0, 1, 0, p;\n"
        "}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

__device__ __forceinline__ void MbarArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

// Warp specialization's register split for blocks of one producer warpgroup and kConsumers
// consumer warpgroups launched with __launch_bounds__(128 (1 + kConsumers), 1): setmaxnreg
// moves registers between the warpgroups inside the block's allocation (the register file's
// 64K over its threads, in units of 8: 168 at 384 threads), so the two counts must not ask for
// more than that, or the consumers' setmaxnreg.inc waits forever for registers no one frees.
template <int kConsumers, int kProducerRegs, int kConsumerRegs>
struct RegisterSplit {
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static_assert(128 * kProducerRegs + 128 * kConsumers * kConsumerRegs <=
                    65536 / kThreads / 8 * 8 * kThreads,
                "the split asks for more registers than the block is allocated");
  __device__ static void Producer() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kProducerRegs));
  }
  __device__ static void Consumer() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kConsumerRegs));
  }
};
// The split of this project's warp-specialized kernels (the prefill grouped GEMM, flash
// prefill, flash decode): one producer warpgroup on 40 registers, two consumers on 232.
using TwoConsumerRegisters = RegisterSplit<2, 40, 232>;

// 16 bytes global -> shared through L2 only.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
// The same with src_bytes < 16 zero-filling the rest (0: all zeros).
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, uint32_t src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}

// 4 bytes global -> shared through L1 (.ca: the only form for fewer than 16 bytes); src_bytes =
// 0 zero-fills.
__device__ __forceinline__ void CpAsync4(uint32_t dst, const void* src, uint32_t src_bytes = 4) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}

// cp.async's completion groups: Commit closes the group of this thread's copies issued since
// the last one; Wait<N> returns once at most N of its groups are still in flight.
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// The barrier gets this thread's arrival once all its earlier cp.async have landed.
__device__ __forceinline__ void CpAsyncArrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

// TMA loads completing on an mbarrier with a byte count: the arrival that expects the bytes,
// then the copies (the map a __grid_constant__ kernel parameter).
__device__ __forceinline__ void MbarExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void TmaLoad2d(uint32_t dst, const CUtensorMap& map, uint32_t bar,
                                          int32_t x0, int32_t x1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, "
      "%4}], [%2];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(bar), "r"(x0), "r"(x1)
      : "memory");
}

// wgmma shared-memory operand descriptor with 128-byte swizzle, offsets in bytes. K-major tiles
// of 128-byte rows: 8-row groups 1024 bytes apart (sbo), lbo unused (16); the tile 1024-byte
// aligned (base offset 0). MN-major tiles: lbo the distance between 64-element column blocks.
__device__ __forceinline__ uint64_t WgmmaDesc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | static_cast<uint64_t>(lbo >> 4) << 16 |
         static_cast<uint64_t>(sbo >> 4) << 32 | uint64_t{1} << 62;
}

__device__ __forceinline__ void WgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void WgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
// Waits until at most N committed wgmma groups are pending.
template <int N>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// wgmma accumulator operands for inline asm: eight of d's registers from i on ("+f"), and the
// register lists {%0, ..., %31} and {%0, ..., %63} of 32- and 64-register accumulators.
#define DSV3_WGMMA_D8(i)                                                                      \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define DSV3_WGMMA_R32                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define DSV3_WGMMA_R64                                                                          \
  DSV3_WGMMA_R32 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, " \
                 "%47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "  \
                 "%62, %63"

// D [64, 128] += A [64, 16] B [16, 128], BF16 in, F32 accumulated: A from registers (an m64
// accumulator's layout packed to BF16 pairs: flash attention's P), B MN-major in shared memory
// (V, transposed).
__device__ __forceinline__ void WgmmaBf16RegA64x128x16(float (&d)[64], const uint32_t (&a)[4],
                                                       uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.eq.b32 p, 1, 1;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DSV3_WGMMA_R64
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : DSV3_WGMMA_D8(0), DSV3_WGMMA_D8(8), DSV3_WGMMA_D8(16), DSV3_WGMMA_D8(24),
        DSV3_WGMMA_D8(32), DSV3_WGMMA_D8(40), DSV3_WGMMA_D8(48), DSV3_WGMMA_D8(56)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

// Keeps the compiler from moving register accesses across wgmma issue and wait, which it
// cannot see.
template <int N>
__device__ __forceinline__ void FenceRegs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void FenceRegs(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
  }
}

}  // namespace dsv3::kernels
