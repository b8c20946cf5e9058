// The flash decode kernel's consumer warpgroups L and R (kernels/flash_mla_decode.cu describes
// the seesaw schedule they follow): S, the online softmax and P V for their halves of O, and the
// piece's output. Included by flash_mla_decode.cu only.
#pragma once

#include <cstdint>

#include "kernels/flash_mla_decode_block.cuh"

namespace dsv3::kernels::flash_decode {

// A consumer: thread (warp w of the warpgroup, lane = 4 g + t) holds rows row0 = 16 w + g and
// row0 + 8 at columns 8 n + 2 t, + 1 of each 8-column slice n (the wgmma accumulator layout):
// S slice n (the tile's keys 8 n ...) in s[4 n, + 4); O dims 256 c + 8 n ... in o_lo (n < 16)
// and 256 c + 128 + 8 n ... in o_hi, c = 0 for L and 1 for R.
struct Consumer {
  float s[32];
  float o_lo[64], o_hi[64];
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  float scale_log2;
  int c, row0, t;

  // S = Q K^T over column blocks [B0, B1) of stage st once the part holding them has landed.
  template <int B0, int B1>
  __device__ __forceinline__ void IssueS(const Smem& sm, int st, uint32_t phase, bool first) {
    MbarWait(sm.Full(st, B0 == 0 ? 0 : 1), phase);
    FenceProxyAsync();
    WgmmaFence();  // after the wait's loop, or ptxas serializes the wgmmas
#pragma unroll
    for (int b = B0; b < B1; ++b) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {  // 32 bytes (16 dims) into the blocks' 128-byte rows
        const uint32_t col = b * kBlockBytes + kk * 32;
        WgmmaS(s, WgmmaDesc(sm.q + col, 16, 1024), WgmmaDesc(sm.K(st) + col, 16, 1024),
               !(first && b == B0 && kk == 0));
      }
    }
  }
  // Scores of keys at or past key_end (the last tile's tail) to -inf; the row maxima of s.
  __device__ __forceinline__ void MaskedMax(int key0, int key_end, float& mx0, float& mx1) {
    mx0 = mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int key = key0 + 8 * n + 2 * t;
      if (key >= key_end) s[4 * n] = s[4 * n + 2] = -INFINITY;
      if (key + 1 >= key_end) s[4 * n + 1] = s[4 * n + 3] = -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
      mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    mx0 = QuadMax(mx0);
    mx1 = QuadMax(mx1);
  }
  // P (s times f0 / f1 per row, to BF16) into shared [64 rows][64 keys] at p: one 128-byte row
  // per head, 16-byte chunk n swizzled.
  __device__ __forceinline__ void StoreP(uint32_t p, float f0, float f1) const {
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      StoreShared(p + row0 * 128 + ((n ^ (row0 & 7)) << 4) + 4 * t,
                  PackBf16(s[4 * n] * f0, s[4 * n + 1] * f0));
      StoreShared(p + (row0 + 8) * 128 + ((n ^ ((row0 + 8) & 7)) << 4) + 4 * t,
                  PackBf16(s[4 * n + 2] * f1, s[4 * n + 3] * f1));
    }
    FenceProxyAsync();
  }
  __device__ __forceinline__ void ScaleO(float f0, float f1) {
#pragma unroll
    for (int i = 0; i < 64; i += 4) {
      o_lo[i] *= f0;
      o_lo[i + 1] *= f0;
      o_lo[i + 2] *= f1;
      o_lo[i + 3] *= f1;
      o_hi[i] *= f0;
      o_hi[i + 1] *= f0;
      o_hi[i + 2] *= f1;
      o_hi[i + 3] *= f1;
    }
  }
  // Stage st's V rows of this consumer's dims: column blocks 4 c, 4 c + 1 (o_lo) and 4 c + 2,
  // 4 c + 3 (o_hi), keys [16 kk, + 16).
  __device__ __forceinline__ uint64_t V(const Smem& sm, int st, int half, int kk) const {
    return WgmmaDesc(sm.K(st) + (4 * c + 2 * half) * kBlockBytes + kk * 16 * 128, kBlockBytes,
                     1024);
  }
  // O += P V over stage st with P from s (registers).
  __device__ __forceinline__ void IssuePvLocal(const Smem& sm, int st) {
    uint32_t pa[kKeys / 16][4];
    PackScoresBf16(s, pa);
    FenceRegs(pa);
    FenceRegs(o_lo);
    FenceRegs(o_hi);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      WgmmaBf16RegA64x128x16(o_lo, pa[kk], V(sm, st, 0, kk));
      WgmmaBf16RegA64x128x16(o_hi, pa[kk], V(sm, st, 1, kk));
    }
    WgmmaCommit();
  }
  // O += P V over stage st with P from shared memory at p.
  __device__ __forceinline__ void IssuePvShared(const Smem& sm, int st, uint32_t p) {
    FenceRegs(o_lo);
    FenceRegs(o_hi);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint64_t a = WgmmaDesc(p + kk * 32, 16, 1024);
      WgmmaPv(o_lo, a, V(sm, st, 0, kk));
      WgmmaPv(o_hi, a, V(sm, st, 1, kk));
    }
    WgmmaCommit();
  }
  __device__ __forceinline__ void WaitO() {
    WgmmaWait<0>();
    FenceRegs(o_lo);
    FenceRegs(o_hi);
  }
  __device__ __forceinline__ void Release(uint32_t bar) const {
    if (threadIdx.x % 32 == 0) MbarArrive(bar);
  }

  // L's part of the pair (A = tile a in stage 0, B in stage 1 when has_b).
  __device__ __forceinline__ void PairL(const Smem& sm, int key0, int key_end, uint32_t phase,
                                        bool has_b) {
    FenceRegs(s);
    IssueS<0, kLoBlocks>(sm, 0, phase, true);
    IssueS<kLoBlocks, kColBlocks>(sm, 0, phase, false);
    WgmmaCommit();
    WgmmaWait<0>();
    FenceRegs(s);
    float ma0, ma1;
    MaskedMax(key0, key_end, ma0, ma1);
    ma0 = fmaxf(ma0, m0);  // the tile has a key in range: finite
    ma1 = fmaxf(ma1, m1);
    if (t == 0) {
      StoreShared(sm.Row(0, row0), ma0);
      StoreShared(sm.Row(0, row0 + 8), ma1);
    }
    NamedArrive(kMaxAReady);
    const float scale_a0 = Exp2((m0 - ma0) * scale_log2), scale_a1 = Exp2((m1 - ma1) * scale_log2);
    float sum0, sum1;
    ExpScores(s, scale_log2, ma0, ma1, sum0, sum1);
    l0 = l0 * scale_a0 + sum0;
    l1 = l1 * scale_a1 + sum1;
    ScaleO(scale_a0, scale_a1);
    IssuePvLocal(sm, 0);
    WaitO();
    Release(sm.Empty(0, 0));
    NamedSync(kMaxBReady);
    const float mb0 = LoadShared(sm.Row(1, row0)), mb1 = LoadShared(sm.Row(1, row0 + 8));
    const float scale_b0 = Exp2((ma0 - mb0) * scale_log2);
    const float scale_b1 = Exp2((ma1 - mb1) * scale_log2);
    StoreP(sm.Pa(), scale_b0, scale_b1);
    NamedArrive(kPaReady);
    l0 *= scale_b0;
    l1 *= scale_b1;
    m0 = mb0;
    m1 = mb1;
    if (!has_b) {  // m_B = m_A: nothing to rescale; B's lo part completed empty
      MbarWait(sm.Full(1, 0), phase);
      Release(sm.Empty(1, 0));
      return;
    }
    ScaleO(scale_b0, scale_b1);
    NamedSync(kPbReady);
    MbarWait(sm.Full(1, 0), phase);  // B's lo part (V_B[L]); R's S_B waited for it too
    FenceProxyAsync();
    IssuePvShared(sm, 1, sm.p_b);
    WaitO();
    Release(sm.Empty(1, 0));
  }

  // R's part of the pair.
  __device__ __forceinline__ void PairR(const Smem& sm, int key0, int key_end, uint32_t phase,
                                        bool has_b) {
    float mx0 = -INFINITY, mx1 = -INFINITY;
    if (has_b) {
      FenceRegs(s);
      IssueS<kLoBlocks, kColBlocks>(sm, 1, phase, true);
      IssueS<0, kLoBlocks>(sm, 1, phase, false);
      WgmmaCommit();
      WgmmaWait<0>();
      FenceRegs(s);
      MaskedMax(key0, key_end, mx0, mx1);
    }
    NamedSync(kMaxAReady);
    const float ma0 = LoadShared(sm.Row(0, row0)), ma1 = LoadShared(sm.Row(0, row0 + 8));
    const float mb0 = fmaxf(ma0, mx0), mb1 = fmaxf(ma1, mx1);
    if (t == 0) {
      StoreShared(sm.Row(1, row0), mb0);
      StoreShared(sm.Row(1, row0 + 8), mb1);
    }
    NamedArrive(kMaxBReady);
    // O_R and the sums of R's tiles from m to m_A, then to m_B.
    const float scale0 = Exp2((m0 - ma0) * scale_log2) * Exp2((ma0 - mb0) * scale_log2);
    const float scale1 = Exp2((m1 - ma1) * scale_log2) * Exp2((ma1 - mb1) * scale_log2);
    l0 *= scale0;
    l1 *= scale1;
    ScaleO(scale0, scale1);
    m0 = mb0;
    m1 = mb1;
    if (has_b) {
      float sum0, sum1;
      ExpScores(s, scale_log2, mb0, mb1, sum0, sum1);
      l0 += sum0;
      l1 += sum1;
      StoreP(sm.p_b, 1.0f, 1.0f);
      NamedArrive(kPbReady);
      IssuePvLocal(sm, 1);
    }
    NamedSync(kPaReady);
    MbarWait(sm.Full(0, 1), phase);  // A's hi part (V_A[R]); L's S_A waited for it too
    FenceProxyAsync();
    IssuePvShared(sm, 0, sm.Pa());
    if (has_b) {
      WgmmaWait<1>();
      Release(sm.Empty(1, 1));
    } else {  // B's hi part completed empty
      MbarWait(sm.Full(1, 1), phase);
      Release(sm.Empty(1, 1));
    }
    WaitO();
    Release(sm.Empty(0, 1));
  }

  // A piece starts: O, the maxima and the sums from zero.
  __device__ __forceinline__ void Begin() {
#pragma unroll
    for (int i = 0; i < 64; ++i) o_lo[i] = o_hi[i] = 0.0f;
    m0 = m1 = -INFINITY;
    l0 = l1 = 0.0f;
  }
  // A piece ends: each consumer summed its own tiles; the sums meet in the rows' shared floats
  // (the maxima there are no longer read: R read m_A before the last kMaxBReady, L m_B before
  // the last kPaReady), and both have read them before the next piece's maxima overwrite them.
  // Then O / l into out (slot -1) or the piece's slot of the partials.
  __device__ __forceinline__ void Finish(const FlashMlaDecodeParams& p, const Smem& sm,
                                         const Work& wk) const {
    const float part0 = QuadSum(l0), part1 = QuadSum(l1);
    if (t == 0) {
      StoreShared(sm.Row(c, row0), part0);
      StoreShared(sm.Row(c, row0 + 8), part1);
    }
    NamedSync(kBothConsumers);
    const float sum0 = part0 + LoadShared(sm.Row(1 - c, row0));
    const float sum1 = part1 + LoadShared(sm.Row(1 - c, row0 + 8));
    NamedSync(kBothConsumers);
    const float inv0 = 1.0f / sum0, inv1 = 1.0f / sum1;
    const int h0 = wk.head0 + row0, h1 = h0 + 8;
    const int dim0 = 256 * c + 2 * t;
    if (wk.slot < 0) {
      bf16* out = static_cast<bf16*>(p.out) + wk.item.token_row * p.out_token_stride + dim0;
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        if (h0 < p.heads) {
          bf16* o = out + h0 * p.out_head_stride + 8 * n;
          *reinterpret_cast<uint32_t*>(o) = PackBf16(o_lo[4 * n] * inv0, o_lo[4 * n + 1] * inv0);
          *reinterpret_cast<uint32_t*>(o + 128) =
              PackBf16(o_hi[4 * n] * inv0, o_hi[4 * n + 1] * inv0);
        }
        if (h1 < p.heads) {
          bf16* o = out + h1 * p.out_head_stride + 8 * n;
          *reinterpret_cast<uint32_t*>(o) =
              PackBf16(o_lo[4 * n + 2] * inv1, o_lo[4 * n + 3] * inv1);
          *reinterpret_cast<uint32_t*>(o + 128) =
              PackBf16(o_hi[4 * n + 2] * inv1, o_hi[4 * n + 3] * inv1);
        }
      }
      return;
    }
    const FlashSplitPartials partials = FlashSplitPartialsOf(p);
#pragma unroll
    for (int n = 0; n < 16; ++n) {
      if (h0 < p.heads) {
        float* o = SlotO(partials, wk.slot, h0) + dim0 + 8 * n;
        *reinterpret_cast<float2*>(o) = make_float2(o_lo[4 * n] * inv0, o_lo[4 * n + 1] * inv0);
        *reinterpret_cast<float2*>(o + 128) =
            make_float2(o_hi[4 * n] * inv0, o_hi[4 * n + 1] * inv0);
      }
      if (h1 < p.heads) {
        float* o = SlotO(partials, wk.slot, h1) + dim0 + 8 * n;
        *reinterpret_cast<float2*>(o) =
            make_float2(o_lo[4 * n + 2] * inv1, o_lo[4 * n + 3] * inv1);
        *reinterpret_cast<float2*>(o + 128) =
            make_float2(o_hi[4 * n + 2] * inv1, o_hi[4 * n + 3] * inv1);
      }
    }
    if (c == 0 && t == 0) {
      if (h0 < p.heads) *SlotLse(partials, wk.slot, h0) = m0 * scale_log2 + __log2f(sum0);
      if (h1 < p.heads) *SlotLse(partials, wk.slot, h1) = m1 * scale_log2 + __log2f(sum1);
    }
  }
};

}  // namespace dsv3::kernels::flash_decode
