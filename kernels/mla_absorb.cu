// The absorbed MLA's W_UK and W_UV products for decode steps (kernels/mla_absorb.cuh). At
// DeepSeek-V3 sizes each reads 16.8 MB of BF16 weight (128 heads x [128, 512]) for at most 8
// tokens: a weight stream, which cuBLASLt's batched GEMM ran in ~6.6-6.9 us against a ~3.9 us
// floor, and as a kernel outside kernels/ it also ended the PDL chain (launch.cuh).
//
// A block is one head by 64 rows of A_h (its outputs per token) over all of k: 4 warps, each 16
// rows (the mma's M) by the 8 tokens (its N), mma.sync m16n8k16 BF16 with F32 accumulation. The
// block copies its weight tile into shared memory by cp.async, issued before KernelPrologue's
// wait (no step writes weights), in 4 k-ranges of one commit group each, so the mmas of a range
// run while the next ones land. At V3 sizes the grid is 256 blocks (W_UV, 66 KB tiles) or 1024
// (W_UK, 18 KB tiles), resident at once on an H200 (3 and 8 to 10 blocks per SM): every weight
// load is in flight from the start, overlapping the end of the kernel before. The tokens'
// activations, written by the kernels before, are read after the wait into a [8, k] tile.
//
// Fragments come from shared memory by ldmatrix. W_UV's A_h is the stored rows (row-major [m, k],
// as the mma's A wants it); W_UK's A_h is the transpose of the stored [k, m] rows, which
// ldmatrix.trans delivers in the same fragment layout, so both forms stream the weight as stored
// (no transposed copy of kv_b). The token tile [8, k] is the B operand ("col": k contiguous per
// token), by ldmatrix without .trans. Every shared row is padded by 16 bytes, so that the 8 row
// addresses of each 8x8 ldmatrix fall on 8 distinct 4-bank groups (row pitches are 4 banks
// modulo 32 times an odd number).
#include <cooperative_groups.h>

#include <algorithm>
#include <cassert>

#include "kernels/device_utils.cuh"
#include "kernels/flash_mla_combine.cuh"
#include "kernels/launch.cuh"
#include "kernels/mla_absorb.cuh"
#include "kernels/sm90_async.cuh"

namespace dsv3::kernels {
namespace {

constexpr int kWarps = 4;
constexpr int kBlockRows = 16 * kWarps;  // rows of A_h per block
constexpr int kStages = 4;               // cp.async commit groups over k
constexpr int kMaxK = 512;
constexpr int kPad = 8;  // elements (16 bytes) past every shared row

// The weight tile in shared memory, in the stored layout: W_UV [64 rows, k], W_UK [k, 64 columns].
__host__ __device__ constexpr int WeightTileRows(bool transposed, int k) {
  return transposed ? k : kBlockRows;
}
__host__ __device__ constexpr int WeightPitch(bool transposed, int k) {
  return (transposed ? kBlockRows : k) + kPad;
}
// Bytes of the weight tile and the token tile [8, k + kPad] behind it.
constexpr size_t SmemBytes(bool transposed, int k) {
  return 2 * (static_cast<size_t>(WeightTileRows(transposed, k)) * WeightPitch(transposed, k) +
              static_cast<size_t>(kMlaAbsorbMaxTokens) * (k + kPad));
}
constexpr size_t kMaxSmemBytes = std::max(SmemBytes(false, kMaxK), SmemBytes(true, kMaxK));

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrixX2(uint32_t (&r)[2], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(addr));
}

__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4],
                                        const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// cp.async.wait_group takes an immediate; the stage loop is unrolled, so this folds to one.
static_assert(kStages == 4);
__device__ __forceinline__ void CpAsyncWaitPending(int pending) {
  switch (pending) {
    case 0:
      CpAsyncWait<0>();
      break;
    case 1:
      CpAsyncWait<1>();
      break;
    case 2:
      CpAsyncWait<2>();
      break;
    default:
      CpAsyncWait<3>();
      break;
  }
}

// W_UV's outputs quantized (MlaAbsorbParams::q): each token's amax over the warp's rows (lanes of
// one t), the block's (shared memory), then the head's: each block of the cluster's two writes
// its amaxes into the other's shared memory. The codes of rows `row` and row + 8 (tokens 2t,
// 2t + 1), from the values as out stores them (BF16); block 0 writes the scales.
__device__ void QuantizeHeadOutputs(const MlaAbsorbParams& p, const float (&acc)[2][4], int h,
                                    int row) {
  namespace cg = cooperative_groups;
  __shared__ float warp_amax[kWarps][kMlaAbsorbMaxTokens];
  __shared__ float peer_amax[kMlaAbsorbMaxTokens];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  float v[2][2], amax[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    v[j][0] = ToFloat(FromFloat<bf16>(acc[0][j] + acc[1][j]));
    v[j][1] = ToFloat(FromFloat<bf16>(acc[0][2 + j] + acc[1][2 + j]));
    amax[j] = fmaxf(fabsf(v[j][0]), fabsf(v[j][1]));
#pragma unroll
    for (int o = 4; o < 32; o *= 2) {
      amax[j] = fmaxf(amax[j], __shfl_xor_sync(0xffffffffu, amax[j], o));
    }
    if (g == 0) warp_amax[warp][2 * t + j] = amax[j];
  }
  __syncthreads();
  cg::cluster_group cluster = cg::this_cluster();
  float own = 0.0f;
  asm volatile("barrier.cluster.wait.aligned;");  // the peer has started (arrived at the top)
  if (threadIdx.x < kMlaAbsorbMaxTokens) {
    for (int w = 0; w < kWarps; ++w) own = fmaxf(own, warp_amax[w][threadIdx.x]);
    cluster.map_shared_rank(peer_amax, cluster.block_rank() ^ 1)[threadIdx.x] = own;
  }
  cluster.sync();  // both blocks' amaxes written
  if (threadIdx.x < kMlaAbsorbMaxTokens) {
    warp_amax[0][threadIdx.x] = Block128Scale(fmaxf(own, peer_amax[threadIdx.x]), p.ue8m0);
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int tok = 2 * t + j;
    if (tok >= p.tokens) continue;
    const float s = warp_amax[0][tok];
    uint8_t* q = p.q + tok * p.q_stride + h * 128 + row;
    q[0] = ToE4M3(v[j][0] / s);
    q[8] = ToE4M3(v[j][1] / s);
    if (blockIdx.x == 0 && threadIdx.x < 4) p.q_scales[h * p.q_rows + tok] = s;
  }
}

// Grid (m / 64 rounded up, heads), kWarps * 32 threads, SmemBytes(kTransposed, k) of shared
// memory: the weight tile, then the token tile.
template <bool kTransposed>
__global__ void __launch_bounds__(kWarps * 32) MlaAbsorbKernel(MlaAbsorbParams p) {
  extern __shared__ uint4 smem[];
  const int k = p.k, ksteps = k / 16, per_stage = (ksteps + kStages - 1) / kStages;
  const int w_pitch = WeightPitch(kTransposed, k), x_pitch = k + kPad;
  bf16* const wtile = reinterpret_cast<bf16*>(smem);
  bf16* const xtile = wtile + WeightTileRows(kTransposed, k) * w_pitch;
  const int h = blockIdx.y, m0 = blockIdx.x * kBlockRows;
  const int rows = min(kBlockRows, p.m - m0);  // a multiple of 16: whole warps
  const bf16* const w = static_cast<const bf16*>(p.w) + h * p.w_head_stride;
  // Quantizing: this block's arrival at the cluster barrier that the amax exchange waits on, so
  // that its peer's shared memory exists before it is written.
  if (!kTransposed && p.q != nullptr) asm volatile("barrier.cluster.arrive.relaxed.aligned;");

  // Stage s: k-steps [s per_stage, (s + 1) per_stage) of the tile's rows, in 16-byte chunks.
  // Rows (W_UV) or columns (W_UK) past m stay unloaded: their warps compute nothing.
#pragma unroll
  for (int s = 0; s < kStages; ++s) {
    const int k0 = min(s * per_stage, ksteps) * 16, k1 = min((s + 1) * per_stage, ksteps) * 16;
    if constexpr (kTransposed) {
      const int chunks = rows / 8;  // per stored row k of the tile's columns [m0, m0 + rows)
      for (int i = threadIdx.x; i < (k1 - k0) * chunks; i += blockDim.x) {
        const int r = k0 + i / chunks, c = i % chunks * 8;
        CpAsync16(SmemAddr(wtile + r * w_pitch + c), w + r * p.w_row_stride + m0 + c);
      }
    } else {
      const int chunks = (k1 - k0) / 8;  // per stored row m0 + r
      for (int i = threadIdx.x; i < rows * chunks; i += blockDim.x) {
        const int r = i / chunks, c = k0 + i % chunks * 8;
        CpAsync16(SmemAddr(wtile + r * w_pitch + c), w + (m0 + r) * p.w_row_stride + c);
      }
    }
    CpAsyncCommit();
  }

  // A deferred merge's pieces come from the items, the step's plan: known before the wait.
  __shared__ int merge_slot[kFlashDecodeMaxParts];
  int merge_pieces = 0;
  if constexpr (!kTransposed) {
    if (p.merge.base != nullptr) merge_pieces = PlanMerge(p.merge, 0, merge_slot);
  }
  KernelPrologue();
  // x_h [8, k]; tokens past p.tokens are zeros (their product columns are computed, not stored).
  const int x_chunks = k / 8;
  bool merged = false;
  if constexpr (!kTransposed) {
    if (p.merge.base != nullptr) {
      // One token (k = 512 = 128 threads x 4 dims): row 0 is its pieces merged, rows 1-7 zeros.
      __shared__ float weight[kFlashDecodeMaxParts];
      __shared__ float warp_value[4];
      float v[4];
      MergeSplits(p.merge, merge_pieces, merge_slot, h, weight, warp_value, v);
      *reinterpret_cast<uint2*>(xtile + 4 * threadIdx.x) =
          make_uint2(PackBf16(v[0], v[1]), PackBf16(v[2], v[3]));
      for (int i = x_chunks + threadIdx.x; i < kMlaAbsorbMaxTokens * x_chunks; i += blockDim.x) {
        const int t = i / x_chunks, c = i % x_chunks * 8;
        *reinterpret_cast<uint4*>(xtile + t * x_pitch + c) = make_uint4(0, 0, 0, 0);
      }
      merged = true;
    }
  }
  if (!merged) {
    const bf16* const x = static_cast<const bf16*>(p.x) + h * p.x_head_stride;
    for (int i = threadIdx.x; i < kMlaAbsorbMaxTokens * x_chunks; i += blockDim.x) {
      const int t = i / x_chunks, c = i % x_chunks * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (t < p.tokens) v = __ldg(reinterpret_cast<const uint4*>(x + t * p.x_token_stride + c));
      *reinterpret_cast<uint4*>(xtile + t * x_pitch + c) = v;
    }
  }

  // ldmatrix row addresses of this lane at k-step 0 (lane l addresses row l % 8 of matrix l / 8):
  // - W_UV, A_h stored [m, k]: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
  //   (rows 8-15, k 8-15) of the warp's 16 rows are the fragments a0..a3;
  // - W_UK, A_h^T stored [k, m]: matrices (k 0-7, m 0-7), (k 0-7, m 8-15), (k 8-15, m 0-7),
  //   (k 8-15, m 8-15), transposed by .trans into the same a0..a3;
  // - B: token rows 0-7 at k 0-7 and k 8-15 are b0, b1.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const bool active = warp * 16 < rows;
  uint32_t a_addr, a_step;  // bytes per k-step
  if constexpr (kTransposed) {
    a_addr =
        SmemAddr(wtile + (lane % 8 + 8 * (lane / 16)) * w_pitch + warp * 16 + 8 * (lane / 8 % 2));
    a_step = 16 * w_pitch * 2;
  } else {
    a_addr =
        SmemAddr(wtile + (warp * 16 + lane % 8 + 8 * (lane / 8 % 2)) * w_pitch + 8 * (lane / 16));
    a_step = 32;
  }
  const uint32_t b_addr = SmemAddr(xtile + lane % 8 * x_pitch + 8 * (lane / 8 % 2));
  auto step = [&](float(&acc)[4], int kk) {
    uint32_t a[4], b[2];
    if constexpr (kTransposed) {
      LdMatrixX4Trans(a, a_addr + kk * a_step);
    } else {
      LdMatrixX4(a, a_addr + kk * a_step);
    }
    LdMatrixX2(b, b_addr + kk * 32);
    MmaBf16(acc, a, b);
  };

  // Two independent mma chains (even and odd k-steps), added at the end: half the dependent mma
  // latency after the last stage lands.
  float acc[2][4] = {};
#pragma unroll
  for (int s = 0; s < kStages; ++s) {
    CpAsyncWaitPending(kStages - 1 - s);
    __syncthreads();  // every thread's copies of stage s (and, at s = 0, the token tile) visible
    if (!active) continue;
    const int kk1 = min((s + 1) * per_stage, ksteps);
    for (int kk = s * per_stage; kk < kk1; kk += 2) {
      step(acc[0], kk);
      if (kk + 1 < kk1) step(acc[1], kk + 1);
    }
  }
  // Accumulator: c0, c1 row g, tokens 2t, 2t + 1; c2, c3 row g + 8, the same tokens.
  const int g = lane / 4, t = lane % 4;
  if constexpr (!kTransposed) {
    if (p.q != nullptr) {  // m 128: every warp active
      QuantizeHeadOutputs(p, acc, h, m0 + warp * 16 + g);
    }
  }
  if (!active) return;
  bf16* const out = static_cast<bf16*>(p.out) + h * p.out_head_stride + m0 + warp * 16 + g;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int tok = 2 * t + j;
    if (tok < p.tokens) {
      out[tok * p.out_token_stride] = FromFloat<bf16>(acc[0][j] + acc[1][j]);
      out[tok * p.out_token_stride + 8] = FromFloat<bf16>(acc[0][2 + j] + acc[1][2 + j]);
    }
  }
}

bool Aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

bool MlaAbsorbSupports(const MlaAbsorbParams& p) {
  const bool quantize_fits =
      p.q == nullptr || (!p.transposed && p.m == 128 && p.out_head_stride == 128 &&
                         p.q_rows >= p.tokens && p.q_stride >= int64_t{p.heads} * 128);
  return p.tokens >= 1 && p.tokens <= kMlaAbsorbMaxTokens && p.heads >= 1 && p.heads <= 65535 &&
         p.m > 0 && p.m % 16 == 0 && p.k > 0 && p.k % 16 == 0 && p.k <= kMaxK && Aligned16(p.w) &&
         Aligned16(p.x) && p.w_row_stride % 8 == 0 && p.w_head_stride % 8 == 0 &&
         p.x_token_stride % 8 == 0 && p.x_head_stride % 8 == 0 && quantize_fits;
}

void MlaAbsorb(const MlaAbsorbParams& p, cudaStream_t stream) {
  assert(MlaAbsorbSupports(p));
  static_assert(kWarps * 32 == kFlashCombineThreads, "a block merges a head's pieces");
  assert(p.merge.base == nullptr ||
         (!p.transposed && p.tokens == 1 && p.k == kFlashDecodeLora && p.merge.num_items == 1 &&
          p.merge.heads == p.heads && p.merge.parts <= kFlashDecodeMaxParts));
  auto* kernel = p.transposed ? MlaAbsorbKernel<true> : MlaAbsorbKernel<false>;
  // Per launch rather than once: the attribute belongs to the current device. The same bound
  // every time, so that no launch lowers it under one that a captured graph replays.
  DSV3_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmemBytes));
  const dim3 grid(CeilDiv(p.m, kBlockRows), static_cast<unsigned>(p.heads));
  // Quantizing: a head's two blocks (m 128) as one cluster.
  LaunchInClusters(kernel, grid, kWarps * 32, SmemBytes(p.transposed, p.k), stream,
                   p.q != nullptr ? 2 : 1, p);
}

}  // namespace dsv3::kernels
