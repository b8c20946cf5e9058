#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "kernels/custom_all_reduce.cuh"
#include "kernels/device_utils.cuh"
#include "kernels/launch.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kMaxRanks = kPeerAllReduceMaxRanks;
// A wait reads the host-mapped abort word (a PCIe round trip) once per this many polls.
constexpr uint32_t kPollsPerAbortCheck = 1024;

// 16 bytes of T: the unit every thread moves (4 F32 or 8 BF16 values).
template <typename T>
struct Pack {
  static constexpr int kElems = 16 / sizeof(T);
};

__device__ __forceinline__ void ToFloats(const uint4& raw, float (&v)[4]) {
  v[0] = __uint_as_float(raw.x), v[1] = __uint_as_float(raw.y);
  v[2] = __uint_as_float(raw.z), v[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void ToFloats(const uint4& raw, float (&v)[8]) {
  Bf16x8ToFloats(raw, v);
}
__device__ __forceinline__ uint4 FromFloats(const float (&v)[4]) {
  return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]),
                    __float_as_uint(v[3]));
}
__device__ __forceinline__ uint4 FromFloats(const float (&v)[8]) { return FloatsToBf16x8(v); }

__device__ __forceinline__ void StoreRelease(uint32_t* addr, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t LoadAcquire(const uint32_t* addr) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(addr) : "memory");
  return v;
}

// Pack i of the caller's data: 16-byte accesses where the address allows, element by element for
// a misaligned tensor and for the last, partial pack (zeros past n).
template <typename T>
__device__ __forceinline__ uint4 LoadDataPack(const PeerAllReduceParams& p, bool aligned,
                                              int64_t i) {
  constexpr int kElems = Pack<T>::kElems;
  const T* data = static_cast<const T*>(p.data) + i * kElems;
  if (aligned && (i + 1) * kElems <= p.n) return *reinterpret_cast<const uint4*>(data);
  uint4 raw = make_uint4(0, 0, 0, 0);
  T* elems = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int k = 0; k < kElems; ++k) {
    if (i * kElems + k < p.n) elems[k] = data[k];
  }
  return raw;
}
template <typename T>
__device__ __forceinline__ void StoreDataPack(const PeerAllReduceParams& p, bool aligned, int64_t i,
                                              const uint4& raw) {
  constexpr int kElems = Pack<T>::kElems;
  T* data = static_cast<T*>(p.data) + i * kElems;
  if (aligned && (i + 1) * kElems <= p.n) {
    *reinterpret_cast<uint4*>(data) = raw;
    return;
  }
  const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < kElems; ++k) {
    if (i * kElems + k < p.n) data[k] = elems[k];
  }
}

// Rank r's half `half` of its staging buffer, in packs.
__device__ __forceinline__ uint4* Staging(const PeerAllReduceParams& p, int r, int half) {
  return reinterpret_cast<uint4*>(static_cast<char*>(p.staging[r]) + half * p.staging_bytes);
}

// Pack i summed over the ranks' staging halves, in rank order, in F32, rounded once. The loads
// are all issued before the first add, so the peers' latencies overlap.
template <typename T>
__device__ __forceinline__ uint4 SumOverRanks(const PeerAllReduceParams& p, int half, int64_t i) {
  uint4 raw[kMaxRanks];
#pragma unroll
  for (int r = 0; r < kMaxRanks; ++r) {
    if (r < p.world) raw[r] = Staging(p, r, half)[i];
  }
  float acc[Pack<T>::kElems];
  ToFloats(raw[0], acc);
#pragma unroll
  for (int r = 1; r < kMaxRanks; ++r) {
    if (r < p.world) {
      float v[Pack<T>::kElems];
      ToFloats(raw[r], v);
#pragma unroll
      for (int k = 0; k < Pack<T>::kElems; ++k) acc[k] += v[k];
    }
  }
  return FromFloats(acc);
}

// This call's number on this rank (from 0; every rank makes the same calls, so it is the same on
// all of them, and the same in every block). Advances the count for the next call.
__device__ __forceinline__ uint32_t NextCall(const PeerAllReduceParams& p) {
  uint32_t* calls = p.signals[p.rank]->calls;
  const uint32_t call = calls[blockIdx.x];
  __syncthreads();  // every thread has read it before it changes
  if (threadIdx.x == 0) calls[blockIdx.x] = call + 1;
  if (blockIdx.x == 0) {
    for (int b = gridDim.x + threadIdx.x; b < kPeerAllReduceMaxBlocks; b += blockDim.x) {
      calls[b] = call + 1;
    }
  }
  return call;
}

// A signal's start or mid flags.
enum class Meeting { kStart, kMid };
__device__ __forceinline__ uint32_t (*Flags(PeerAllReduceSignal* s, Meeting m))[kMaxRanks] {
  return m == Meeting::kStart ? s->start : s->mid;
}

// Block b of every rank meets here: on return, every write this block made before the call is
// visible to block b of every rank, and theirs to this block. `flag` is the call's number + 1. A
// peer may already be one call ahead (it can pass the next start barrier's store before this rank
// has seen this one), hence "at least"; the difference is taken modulo 2^32, so the count may wrap.
__device__ __forceinline__ void MeetPeers(const PeerAllReduceParams& p, Meeting m, uint32_t flag) {
  __syncthreads();  // the block's writes come before its arrival
  if (threadIdx.x < p.world) {
    StoreRelease(&Flags(p.signals[threadIdx.x], m)[blockIdx.x][p.rank], flag);
    const uint32_t* from_peer = &Flags(p.signals[p.rank], m)[blockIdx.x][threadIdx.x];
    for (uint32_t polls = 1; static_cast<int32_t>(LoadAcquire(from_peer) - flag) < 0; ++polls) {
      if (polls % kPollsPerAbortCheck == 0 && *p.abort != 0) break;
    }
  }
  __syncthreads();  // the peers' writes come before any thread's reads
}

// What both kernels start from: the call's number, its staging half, whether the caller's data
// takes 16-byte accesses, and the message's length in packs of T.
struct Call {
  uint32_t number;
  int half;
  bool aligned;
  int64_t packs;
};
template <typename T>
__device__ __forceinline__ Call BeginCall(const PeerAllReduceParams& p) {
  const uint32_t number = NextCall(p);
  return {number, static_cast<int>(number & 1), reinterpret_cast<uintptr_t>(p.data) % 16 == 0,
          (p.n + Pack<T>::kElems - 1) / Pack<T>::kElems};
}

// Block b's packs of a range of `packs` packs: b * threads + t, then strides of the grid.
#define DSV3_FOR_BLOCK_PACKS(i, packs)                                                       \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (packs); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void __launch_bounds__(kPeerAllReduceThreads) OneShotKernel(PeerAllReduceParams p) {
  KernelPrologue();
  const Call c = BeginCall<T>(p);
  uint4* mine = Staging(p, p.rank, c.half);
  DSV3_FOR_BLOCK_PACKS(i, c.packs) mine[i] = LoadDataPack<T>(p, c.aligned, i);
  MeetPeers(p, Meeting::kStart, c.number + 1);
  DSV3_FOR_BLOCK_PACKS(i, c.packs) {
    StoreDataPack<T>(p, c.aligned, i, SumOverRanks<T>(p, c.half, i));
  }
}

// Slot s is packs [s * slot, min((s + 1) * slot, packs)); block b handles the same offsets
// within every slot, so its barriers cover what it reads.
template <typename T>
__global__ void __launch_bounds__(kPeerAllReduceThreads) TwoShotKernel(PeerAllReduceParams p) {
  KernelPrologue();
  const Call c = BeginCall<T>(p);
  const int64_t slot = (c.packs + p.world - 1) / p.world;
  const auto slot_packs = [&](int s) {
    const int64_t left = c.packs - s * slot;
    return left < 0 ? 0 : (left < slot ? left : slot);
  };
  uint4* mine = Staging(p, p.rank, c.half);
  for (int s = 0; s < p.world; ++s) {
    DSV3_FOR_BLOCK_PACKS(i, slot_packs(s)) {
      mine[s * slot + i] = LoadDataPack<T>(p, c.aligned, s * slot + i);
    }
  }
  MeetPeers(p, Meeting::kStart, c.number + 1);
  // Reduce-scatter into this rank's own slot, in place: only this rank reads its slot now.
  const int64_t own = p.rank * slot;
  DSV3_FOR_BLOCK_PACKS(i, slot_packs(p.rank)) mine[own + i] = SumOverRanks<T>(p, c.half, own + i);
  MeetPeers(p, Meeting::kMid, c.number + 1);
  for (int s = 0; s < p.world; ++s) {
    const uint4* reduced = Staging(p, s, c.half) + s * slot;
    DSV3_FOR_BLOCK_PACKS(i, slot_packs(s)) StoreDataPack<T>(p, c.aligned, s * slot + i, reduced[i]);
  }
}

#undef DSV3_FOR_BLOCK_PACKS

}  // namespace

void PeerAllReduce(const PeerAllReduceParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  const int64_t elem = p.type == ElemType::kBF16 ? 2 : 4;
  if ((p.type != ElemType::kF32 && p.type != ElemType::kBF16) || p.world < 2 ||
      p.world > kMaxRanks || p.rank < 0 || p.rank >= p.world || p.max_blocks < 1 ||
      p.max_blocks > kPeerAllReduceMaxBlocks || p.staging_bytes % 16 != 0 ||
      p.n * elem > p.staging_bytes || p.abort == nullptr) {
    std::fprintf(stderr, "PeerAllReduce: invalid params (n %ld, rank %d of %d, staging %ld)\n",
                 static_cast<long>(p.n), p.rank, p.world, static_cast<long>(p.staging_bytes));
    std::abort();
  }
  const int64_t packs = CeilDiv(p.n * elem, 16);
  const int64_t per_block = p.two_shot ? CeilDiv(packs, p.world) : packs;
  const int blocks = std::min<int>(p.max_blocks, CeilDiv(per_block, kPeerAllReduceThreads));
  const bool is_bf16 = p.type == ElemType::kBF16;
  auto* kernel = p.two_shot ? (is_bf16 ? TwoShotKernel<bf16> : TwoShotKernel<float>)
                            : (is_bf16 ? OneShotKernel<bf16> : OneShotKernel<float>);
  Launch(kernel, blocks, kPeerAllReduceThreads, 0, stream, p);
}

}  // namespace dsv3::kernels
