// FlashAttention-3-style causal MLA prefill for Hopper (sm_90a wgmma, warp-specialized).
// Block (query tile of 128 rows, head), 384 threads: warpgroup 0 the producer, which streams
// 128-key tiles (K [128, 192], V [128, 128]) into a ring of two shared-memory stages by
// cp.async, each K and V half completing on its own "full" mbarrier; warpgroups 1 and 2 the
// consumers, 64 query rows each. Per key tile j a consumer issues S_j = Q K_j^T (wgmma
// m64n128k16, Q and K from shared memory) and O += P_{j-1} V_{j-1} (wgmma m64n128k16, P from
// registers as BF16, V from shared memory, MN-major), then runs the online softmax of S_j while
// the P V wgmmas are still in flight; K_j is released as soon as S_j is in registers, V_{j-1}
// once its wgmmas are done. The two consumers also take turns issuing their wgmmas (named
// barriers), so that one's softmax runs under the other's matrix work. Both consumers walk the
// same key tiles (the diagonal one half masked for the first), so their turns pair up.
//
// Numerics as the FlashAttention-2 mma.sync kernel this replaced: F32 scores and softmax (exp2
// with scale * log2(e) folded in), P rounded to BF16 for P V, F32 O; ~5.7e-4 relative error
// against an F64 reference at T = 4096, <= 2.3e-3 on small shapes.
//
// Its speed on the H200 against the forms it replaced (smaller tiles, no turns, the mma.sync
// kernel): docs/journal/2026-11-28-h200-runs.md.
#include "kernels/device_utils.cuh"
#include "kernels/flash_mla_prefill.cuh"
#include "kernels/launch.cuh"
#include "kernels/sm90_async.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kQk = kFlashMlaNope + kFlashMlaRope, kV = kFlashMlaV;
constexpr int kRows = kFlashMlaTileTokens;  // query rows per block: two consumers x 64
static_assert(kRows == 128);
constexpr int kKeys = 128;  // keys per tile: the S wgmma's N, 8 k16 steps of P V
constexpr int kStages = 2;  // K/V tiles in flight: all the shared memory there is at 128 keys
constexpr int kThreads = 3 * 128;

// Shared memory, BF16, every tile in 128-byte-swizzled column blocks of [rows][64 elements]
// (the wgmma layout): Q [128, 192] = 3 blocks, then per stage K [kKeys, 192] = 3 blocks and
// V [kKeys, 128] = 2 blocks; then the mbarriers. 128 keys, 2 stages: 48 + 2 * 80 = 208 KB.
constexpr int kQBytes = kRows * kQk * 2, kKBytes = kKeys * kQk * 2, kVBytes = kKeys * kV * 2;
constexpr int kStageBytes = kKBytes + kVBytes;
constexpr int kBarBytes = 4 * kStages * 8;  // full K, full V, empty K, empty V per stage
constexpr int kSmemBytes = 1024 + kQBytes + kStages * kStageBytes + kBarBytes;

// One arrival from lane 0, predicated rather than branched: consumers arrive while their P V
// wgmmas are in flight, and divergent code between wgmma issue and wait is one cause of ptxas
// serializing the wgmmas (warning C7515).
__device__ __forceinline__ void MbarArriveLane0(uint32_t bar, int lane) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.eq.s32 p, %1, 0;\n@p mbarrier.arrive.shared::cta.b64 _, [%0];\n}" ::
          "r"(bar),
      "r"(lane)
      : "memory");
}

// Named barriers 1 and 2: consumer w waits on 1 + w before issuing its wgmmas and, once they
// are issued, lets the other one go.
__device__ __forceinline__ void BarSync(int id) {
  asm volatile("bar.sync %0, 256;" ::"r"(id) : "memory");
}
__device__ __forceinline__ void BarArrive(int id) {
  asm volatile("bar.arrive %0, 256;" ::"r"(id) : "memory");
}


// S [64, 128 keys] (+)= Q K^T over 16 of the 192 dims, both K-major in shared memory.
__device__ __forceinline__ void WgmmaQk(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DSV3_WGMMA_R64
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : DSV3_WGMMA_D8(0), DSV3_WGMMA_D8(8), DSV3_WGMMA_D8(16), DSV3_WGMMA_D8(24),
        DSV3_WGMMA_D8(32), DSV3_WGMMA_D8(40), DSV3_WGMMA_D8(48), DSV3_WGMMA_D8(56)
      : "l"(a), "l"(b), "r"(accumulate));
}

struct Smem {
  uint32_t q, stages, bars;
  __device__ uint32_t K(int st) const { return stages + st * kStageBytes; }
  __device__ uint32_t V(int st) const { return K(st) + kKBytes; }
  __device__ uint32_t FullK(int st) const { return bars + 8 * st; }
  __device__ uint32_t FullV(int st) const { return bars + 8 * (kStages + st); }
  __device__ uint32_t EmptyK(int st) const { return bars + 8 * (2 * kStages + st); }
  __device__ uint32_t EmptyV(int st) const { return bars + 8 * (3 * kStages + st); }
};

// Producer warpgroup: thread (r = tid / 8, c = tid % 8) copies 16-byte chunk c of each 128-byte
// row segment of rows r, r + 16, ...; those rows share r % 8, hence one swizzled offset.
__device__ __forceinline__ void Produce(const FlashMlaPrefillParams& p, const FlashMlaTile& tile,
                                        int64_t h, const Smem& sm, int key_tiles) {
  const int c = threadIdx.x % 8, r = threadIdx.x / 8;
  const uint32_t swz = static_cast<uint32_t>(r * 128 + ((c ^ (r & 7)) << 4));
  // Q: rows past the tile's tokens are zero queries whose outputs are dropped.
  const bf16* q =
      static_cast<const bf16*>(p.q) + tile.q_row * p.q_token_stride + h * p.q_head_stride + c * 8;
#pragma unroll
  for (int i = 0; i < kRows / 16; ++i) {
    const int row = r + 16 * i;
    const bool valid = row < tile.rows;
    const bf16* src = q + (valid ? row : 0) * p.q_token_stride;
#pragma unroll
    for (int b = 0; b < kQk / 64; ++b) {
      CpAsync16(sm.q + b * kRows * 128 + 16 * i * 128 + swz, src + b * 64, valid ? 16 : 0);
    }
  }
  const bf16* kv_head = static_cast<const bf16*>(p.kv) + tile.dense_offset * p.kv_row_stride +
                        h * (kFlashMlaNope + kFlashMlaV) + c * 8;
  const bf16* pe = static_cast<const bf16*>(p.latents) + tile.dense_offset * p.latent_stride +
                   p.rope_offset + c * 8;
  const int keys = tile.pos + tile.rows;
  for (int j = 0, st = 0; j < key_tiles; ++j, st = st + 1 == kStages ? 0 : st + 1) {
    const uint32_t parity = (j / kStages + 1) & 1;  // of the consumers' previous release
    if (j >= kStages) MbarWait(sm.EmptyK(st), parity);
      // K rows: the head's k_nope (2 column blocks), then the shared k_pe; zero past `keys`.
#pragma unroll
    for (int i = 0; i < kKeys / 16; ++i) {
      const int key = j * kKeys + r + 16 * i;
      const bool valid = key < keys;
      const int64_t row = valid ? key : 0;
      const bf16* kvr = kv_head + row * p.kv_row_stride;
      const uint32_t dst = sm.K(st) + 16 * i * 128 + swz;
      CpAsync16(dst, kvr, valid ? 16 : 0);
      CpAsync16(dst + kKeys * 128, kvr + 64, valid ? 16 : 0);
      CpAsync16(dst + 2 * kKeys * 128, pe + row * p.latent_stride, valid ? 16 : 0);
    }
    CpAsyncArrive(sm.FullK(st));  // tile 0's also covers Q
    if (j >= kStages) MbarWait(sm.EmptyV(st), parity);
#pragma unroll
    for (int i = 0; i < kKeys / 16; ++i) {
      const int key = j * kKeys + r + 16 * i;
      const bool valid = key < keys;
      const bf16* kvr = kv_head + (valid ? key : 0) * p.kv_row_stride + kFlashMlaNope;
      const uint32_t dst = sm.V(st) + 16 * i * 128 + swz;
      CpAsync16(dst, kvr, valid ? 16 : 0);
      CpAsync16(dst + kKeys * 128, kvr + 64, valid ? 16 : 0);
    }
    CpAsyncArrive(sm.FullV(st));
  }
  asm volatile("cp.async.wait_all;" ::: "memory");
}

// Consumer state: thread (warp w of the warpgroup, lane = 4 g + t) holds rows 16 w + g and
// 16 w + g + 8 of the warpgroup's 64, at columns 8 n + 2 t, + 1 of each 8-column slice n of S
// and O (the wgmma accumulator layout): S slice n in s[4 n, + 4), O slice in o[4 n, + 4).
struct Consumer {
  float s[kKeys / 2];
  float o[kV / 2];
  uint32_t pa[kKeys / 16][4];  // P as wgmma A fragments, 16 keys each
  float m0, m1, l0, l1, alpha0, alpha1;
  int pos0, pos1;  // the two rows' positions
  float scale_log2;

  __device__ __forceinline__ void IssueS(uint32_t qa, uint32_t sk) {
#pragma unroll
    for (int kk = 0; kk < kQk / 16; ++kk) {
      // Dims [16 kk, + 16): column block kk / 4, 32 bytes into its 128-byte rows.
      WgmmaQk(s, WgmmaDesc(qa + (kk / 4) * kRows * 128 + (kk % 4) * 32, 16, 1024),
              WgmmaDesc(sk + (kk / 4) * kKeys * 128 + (kk % 4) * 32, 16, 1024), kk > 0);
    }
  }
  __device__ __forceinline__ void IssuePv(uint32_t sv) {
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      WgmmaBf16RegA64x128x16(o, pa[kk], WgmmaDesc(sv + kk * 16 * 128, kKeys * 128, 1024));
    }
  }
  // Online softmax of S (keys [k0, k0 + kKeys)): new row maxima, alpha (O's rescale), l, and
  // S overwritten by exp2(S * scale_log2 - max * scale_log2).
  template <bool kMask>
  __device__ __forceinline__ void Softmax(int k0) {
    const int t = threadIdx.x % 4;
    if (kMask) {
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
        const int key = k0 + n * 8 + 2 * t;
        if (key > pos0) s[4 * n] = -INFINITY;
        if (key + 1 > pos0) s[4 * n + 1] = -INFINITY;
        if (key > pos1) s[4 * n + 2] = -INFINITY;
        if (key + 1 > pos1) s[4 * n + 3] = -INFINITY;
      }
    }
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
      mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
      mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    mx0 = QuadMax(mx0);
    mx1 = QuadMax(mx1);
    // Key tile 0 is never masked out entirely, so the maxima are finite from it on.
    alpha0 = Exp2((m0 - mx0) * scale_log2);
    alpha1 = Exp2((m1 - mx1) * scale_log2);
    m0 = mx0;
    m1 = mx1;
    float sum0, sum1;
    ExpScores(s, scale_log2, mx0, mx1, sum0, sum1);
    l0 = l0 * alpha0 + sum0;
    l1 = l1 * alpha1 + sum1;
  }
  __device__ __forceinline__ void PackP() { PackScoresBf16(s, pa); }
  __device__ __forceinline__ void RescaleO() {
#pragma unroll
    for (int n = 0; n < kV / 8; ++n) {
      o[4 * n] *= alpha0;
      o[4 * n + 1] *= alpha0;
      o[4 * n + 2] *= alpha1;
      o[4 * n + 3] *= alpha1;
    }
  }

  // Key tile j >= 1: S_j = Q K_j^T and O += P_{j-1} V_{j-1} in flight together, the softmax of
  // S_j under the P V wgmmas.
  template <bool kMask>
  __device__ __forceinline__ void Step(const Smem& sm, uint32_t qa, int j, int wg, int lane) {
    const int st = j % kStages, prev = (j - 1) % kStages;
    MbarWait(sm.FullK(st), (j / kStages) & 1);
    MbarWait(sm.FullV(prev), ((j - 1) / kStages) & 1);
    // cp.async wrote the tiles through the generic proxy; wgmma reads through the async one.
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    BarSync(1 + wg);
    FenceRegs(s);
    WgmmaFence();
    IssueS(qa, sm.K(st));
    WgmmaCommit();
    RescaleO();  // by the previous softmax's alpha, under the S wgmmas
    FenceRegs(o);
    FenceRegs(pa);
    WgmmaFence();
    IssuePv(sm.V(prev));
    WgmmaCommit();
    BarArrive(2 - wg);
    WgmmaWait<1>();
    FenceRegs(s);
    MbarArriveLane0(sm.EmptyK(st), lane);
    Softmax<kMask>(j * kKeys);
    WgmmaWait<0>();
    FenceRegs(o);
    MbarArriveLane0(sm.EmptyV(prev), lane);
    PackP();
  }
};

__global__ void __launch_bounds__(kThreads, 1)
    FlashMlaPrefillKernel(const FlashMlaPrefillParams p) {
  KernelPrologue();
  extern __shared__ unsigned char smem_raw[];
  // The 128-byte swizzle repeats every 1024 bytes: tiles start 1024-byte aligned.
  const uint32_t base = (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023) & ~1023u;
  const Smem sm{base, base + kQBytes, base + kQBytes + kStages * kStageBytes};
  if (threadIdx.x == 0) {
    for (int st = 0; st < kStages; ++st) {
      MbarInit(sm.FullK(st), 128);  // every producer thread's cp.async arrival
      MbarInit(sm.FullV(st), 128);
      MbarInit(sm.EmptyK(st), 8);  // one arrival per consumer warp
      MbarInit(sm.EmptyV(st), 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const FlashMlaTile tile = p.tiles[blockIdx.x];
  const int64_t h = blockIdx.y;
  const int key_tiles = (tile.pos + tile.rows + kKeys - 1) / kKeys;
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    TwoConsumerRegisters::Producer();
    Produce(p, tile, h, sm, key_tiles);
    return;
  }
  TwoConsumerRegisters::Consumer();
  const int w = wg - 1;  // consumer index: rows [64 w, 64 w + 64) of the tile
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int row = 64 * w + 16 * warp + lane / 4;
  Consumer cs;
  cs.pos0 = tile.pos + row;
  cs.pos1 = cs.pos0 + 8;
  cs.scale_log2 = p.scale * 1.4426950408889634f;
  cs.m0 = cs.m1 = -INFINITY;
  cs.l0 = cs.l1 = 0.0f;
#pragma unroll
  for (int i = 0; i < kV / 2; ++i) cs.o[i] = 0.0f;
  const uint32_t qa = sm.q + 64 * w * 128;  // the consumer's 64 rows in each Q column block
  // Tiles [0, unmasked) precede every row of this consumer; the rest need the causal mask.
  const int unmasked = min((tile.pos + 64 * w + 1) / kKeys, key_tiles);

  MbarWait(sm.FullK(0), 0);
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  WgmmaFence();
  cs.IssueS(qa, sm.K(0));
  WgmmaCommit();
  WgmmaWait<0>();
  FenceRegs(cs.s);
  MbarArriveLane0(sm.EmptyK(0), lane);
  if (unmasked > 0) {
    cs.Softmax<false>(0);
  } else {
    cs.Softmax<true>(0);
  }
  cs.PackP();
  if (w == 1) BarArrive(1);  // consumer 0 issues first
  int j = 1;
  for (; j < unmasked; ++j) cs.Step<false>(sm, qa, j, w, lane);
  for (; j < key_tiles; ++j) cs.Step<true>(sm, qa, j, w, lane);
  const int last = (key_tiles - 1) % kStages;
  MbarWait(sm.FullV(last), ((key_tiles - 1) / kStages) & 1);
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  BarSync(1 + w);
  cs.RescaleO();
  FenceRegs(cs.o);
  FenceRegs(cs.pa);
  WgmmaFence();
  cs.IssuePv(sm.V(last));
  WgmmaCommit();
  if (w == 0) BarArrive(2);  // balances consumer 1's first arrival
  WgmmaWait<0>();
  FenceRegs(cs.o);

  const float inv0 = 1.0f / QuadSum(cs.l0), inv1 = 1.0f / QuadSum(cs.l1);
  const int r0 = row, r1 = row + 8;
  bf16* out = static_cast<bf16*>(p.out) + tile.q_row * p.out_token_stride + h * kV + 2 * (lane % 4);
#pragma unroll
  for (int n = 0; n < kV / 8; ++n) {
    if (r0 < tile.rows) {
      *reinterpret_cast<uint32_t*>(out + r0 * p.out_token_stride + n * 8) =
          PackBf16(cs.o[4 * n] * inv0, cs.o[4 * n + 1] * inv0);
    }
    if (r1 < tile.rows) {
      *reinterpret_cast<uint32_t*>(out + r1 * p.out_token_stride + n * 8) =
          PackBf16(cs.o[4 * n + 2] * inv1, cs.o[4 * n + 3] * inv1);
    }
  }
}

}  // namespace

void FlashMlaPrefill(const FlashMlaPrefillParams& p, cudaStream_t stream) {
  if (p.num_tiles == 0 || p.heads == 0) return;
  // Per launch rather than once: the attribute belongs to the current device.
  DSV3_CUDA_CHECK(cudaFuncSetAttribute(FlashMlaPrefillKernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  Launch(FlashMlaPrefillKernel,
         dim3(static_cast<unsigned>(p.num_tiles), static_cast<unsigned>(p.heads)), kThreads,
         kSmemBytes, stream, p);
}

}  // namespace dsv3::kernels
