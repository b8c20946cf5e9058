#include <algorithm>
#include <cassert>
#include <cmath>
#include <map>
#include <tuple>
#include <utility>

#include "kernels/device_utils.cuh"
#include "kernels/fp8_mma_tile.cuh"
#include "kernels/launch.cuh"
#include "kernels/moe_grouped.cuh"
#include "kernels/rope.cuh"
#include "kernels/sm90_async.cuh"

namespace dsv3::kernels {

namespace {

static_assert(kGroupedChunkRows == kTokens, "a chunk is one token tile of the ring");

// Token tiles a warp accumulates per pass over the weights: one, fed by a ring (Feed below), for
// grouped launches (a group or chunk of at most 8 rows per block) and dense ones of at most 8
// rows; kDenseTokTiles for larger dense ones (at most 16 rows), which loads each pair's
// activations and scales together with its weights: one memory latency per pair instead of two,
// where decode sizes are latency-bound (docs/perf/h200.md, dsv3-dense-gemm-bench).
constexpr int kDenseTokTiles = 2;
constexpr int kBlockWarps = 8;  // warps per block while ksplit <= 8
constexpr int kMaxKSplit = 16;  // warps sharing one column tile; also the most warps per block
// Warps a launch should have before K is split no further. A warp has 4 KB of weights in flight
// per step (2 k-blocks x 16 rows x 128 bytes); 4096 warps are two waves of the 16 per SM that
// fit at ~126 registers on H200's 132 SMs, and 16 x 132 x 4 KB = 8.6 MB in flight is well over
// the ~5 MB that 4.8 TB/s x ~1 us of DRAM latency needs.
constexpr int64_t kTargetWarps = 4096;

// How a warp gets its operands:
//  - kPairs loads a pair of k-blocks into registers and then works through it, waiting out the
//    pair's whole latency (Nsight Compute on o_proj: 43% of stalls at a pair's first conversion).
//  - kRegisterRing (grouped launches, one token tile) keeps a ring of
//    three blocks' operands in registers, each loaded a pair ahead of its arithmetic (127
//    registers: two blocks of 8 warps per SM).
//  - kSmemRing (dense launches of at most 8 rows, one token tile) copies the weights by cp.async
//    into a ring of kRingStages blocks per warp in shared memory, two blocks ahead: 64
//    registers, so two blocks of 16 warps fit per SM, twice the warps of the other feeds: the
//    fastest feed for dense launches; grouped launches ran slower on it than on the register
//    ring (docs/journal/2026-12-03-smem-ring.md).
// Every feed takes the same blocks in the same order through the same arithmetic: the sums
// are the same bits whichever feeds a launch.
enum class Feed { kPairs, kRegisterRing, kSmemRing };

// One k-block's operands as the register ring (Feed::kRegisterRing) loads them: this lane's
// bytes of weight rows g and g + 8 (LoadWeightBlock), the weight block's scale, and the token
// fragment with the scales of output rows 2t and 2t + 1 (LoadTokenFragment).
struct BlockOperands {
  uint4 g[2], g8[2];
  float ws;
  uint4 x[2];
  float xsa, xsb;
};

// The shared-memory ring: stages per warp (4 measured slower: 96 KB of ring per 16-warp block
// leaves room for two blocks per SM, 128 KB does not) and a stage's bytes, [4 pieces][32 lanes]
// x 16 bytes.
constexpr int kRingStages = 3;
constexpr int kRingStageBytes = 4 * 32 * 16;
constexpr int kMaxRingBytes = kMaxKSplit * kRingStages * kRingStageBytes;  // a block's at most

// Block i (k-block kb) of this lane's weights (LoadWeightBlock's four 16-byte pieces) into slot
// i % kRingStages of its warp's ring [kRingStages][4][32 lanes], as one completion group: an empty
// group once i >= blocks, so that every iteration closes exactly one.
__device__ __forceinline__ void IssueRingBlock(uint4* ring, int lane, const uint8_t* wrow,
                                               int32_t row8, int32_t i, int32_t blocks,
                                               int32_t kb) {
  if (i < blocks) {
    const uint8_t* w = wrow + kb * 128;
    const uint32_t slot = SmemAddr(ring + (i % kRingStages) * 4 * 32 + lane);
    CpAsync16(slot, w);
    CpAsync16(slot + 32 * 16, w + 64);
    CpAsync16(slot + 64 * 16, w + row8);
    CpAsync16(slot + 96 * 16, w + row8 + 64);
  }
  CpAsyncCommit();
}

// What both entry points launch. Grouped when begin != nullptr; dense otherwise: rows [0, rows)
// of the single weight `dense`.
struct MmaGemmArgs {
  const uint8_t* xq;
  const float* xs;
  int64_t rows_padded, k_pad;
  const int32_t* begin;
  const int32_t* active;
  const int32_t* num_active;
  const GroupedWeight* weights;
  int64_t weights_stride, first;
  GroupedWeight dense;
  int64_t rows;
  int64_t mats, n, scale_stride;
  void* y;
  int64_t y_stride;
  bool y_f32;
  int ksplit;  // warps per column tile, each over every ksplit-th pair of 128-k blocks
  // Chunked grouped launches (GroupedFp8GemmParams::chunks), else empty.
  GroupedChunks chunks;
  RopeEpilogue rope;  // dense launches only
};

// A dense linear's weight is never written by the step, so the kernel asks for it before it
// waits for the kernel before it (launch.cuh): the first kPrefetchPairs pairs of k-blocks this
// warp will read, rows row0 and row0 + 8 (row8 bytes on), go to L2 while that kernel still runs.
// One lane per row and k-block (t == 0): a k-block of a row is one 128-byte line.
constexpr int kPrefetchPairs = 4;
__device__ __forceinline__ void PrefetchFirstPairs(const uint8_t* row0, int kpart, int ksplit,
                                                   int32_t pairs, int32_t row8, int t) {
  if (t != 0) return;
#pragma unroll
  for (int i = 0; i < kPrefetchPairs; ++i) {
    const int32_t pr = kpart + i * ksplit;
    if (pr >= pairs) return;
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const uint8_t* line = row0 + (2 * pr + b) * 128;
      asm volatile("prefetch.global.L2 [%0];" ::"l"(line));
      asm volatile("prefetch.global.L2 [%0];" ::"l"(line + row8));
    }
  }
}

// Block (column tiles, active expert slot or 0): warp w takes column tile w / ksplit of the
// block and k-block pairs kpart, kpart + ksplit, ... (kpart = w % ksplit). The expert's rows go
// in chunks of kTiles x 8: per chunk, each k-block of weights is loaded and converted once and
// stays in registers while every token tile of the chunk uses it; split-K partial sums then meet
// in shared memory, and the kpart 0 warp stores. kFeed says how operands reach the arithmetic
// (Feed above); it changes neither the blocks, nor their order, nor the sums. Inside a weight
// matrix and the activations, addresses are base pointers plus 32-bit offsets (LaunchMmaGemm
// checks that they fit): 64-bit index arithmetic was much of the loop's integer work (Nsight
// Compute on o_proj: docs/journal/2026-12-02-fused-shared-expert-and-negative-levers.md).
// partial_words: the block's split-K exchange, kMaxKSplit x kTiles x 4 x 32 floats.
template <int kTiles, Feed kFeed, bool kRope>
__device__ __forceinline__ void Fp8MmaGemmBody(const MmaGemmArgs& p, float* partial_words) {
  extern __shared__ uint4 ring_smem[];  // kSmemRing: [warps][kRingStages][4][32]
  // [warp][token tile * 4 + c][lane]
  auto& partial = *reinterpret_cast<float(*)[kMaxKSplit][kTiles * 4][32]>(partial_words);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int kpart = warp % p.ksplit;
  // Grouped launches: the group's rows [r_begin, r_end) of local expert e, and the block's column
  // block. The routing is the kernels before's output: read after the prologue.
  int64_t col_block = blockIdx.x, e = 0;
  int32_t r_begin = 0, r_end = static_cast<int32_t>(p.rows);
  if (p.begin != nullptr) {
    KernelPrologue();
    if (p.chunks.expert != nullptr) {
      // Grid row y is chunk y. Expert e's chunks [first, first + count) own rows [first,
      // first + count) of the grid, whose blocks are taken in order as column block major and
      // chunk minor: a column block's chunks run together.
      const int64_t chunk = blockIdx.y;
      if (chunk >= *p.chunks.count) return;  // the whole block
      e = p.chunks.expert[chunk];
      const int64_t first = p.chunks.begin[e], count = p.chunks.begin[e + 1] - first;
      const int64_t local = (chunk - first) * gridDim.x + blockIdx.x;
      col_block = local / count;
      r_begin = p.begin[e] + static_cast<int32_t>(local % count * kTokens);
      r_end = min(p.begin[e + 1], r_begin + kTokens);
    } else {
      if (blockIdx.y >= *p.num_active) return;  // the whole block
      e = p.active[blockIdx.y];
      r_begin = p.begin[e];
      r_end = p.begin[e + 1];
    }
  }
  const int64_t tiles_per_mat = (p.n + kTileCols - 1) / kTileCols;
  const int64_t tile = col_block * (blockDim.x / 32 / p.ksplit) + warp / p.ksplit;
  const bool has_tile = tile < p.mats * tiles_per_mat;
  const int64_t m = tile / tiles_per_mat, c0 = tile % tiles_per_mat * kTileCols;
  const int32_t k_pad = static_cast<int32_t>(p.k_pad);
  const int32_t rows_padded = static_cast<int32_t>(p.rows_padded);
  const int32_t pairs = k_pad / 256;
  const int32_t row_g = static_cast<int32_t>(c0) + g;  // this lane's weight row
  // Bytes from row g to row g + 8 and from one k-block to the next: row-major for dense launches
  // (every feed but the register ring); a grouped launch's matrix says (GroupedWeight), below.
  int32_t row8 = 8 * k_pad, kb_stride = 128;
  uint4* ring = ring_smem + warp * kRingStages * 4 * 32;
  // Block i of this warp is k-block 2 pr + i % 2 of pair pr = kpart + i / 2 * ksplit.
  auto kb_of = [&](int32_t i) { return 2 * (kpart + i / 2 * p.ksplit) + i % 2; };
  const int32_t blocks = has_tile ? 2 * ((pairs - kpart + p.ksplit - 1) / p.ksplit) : 0;
  // A dense linear's weight is never written by the step (launch.cuh): its first blocks may
  // load before the kernel before this one has finished, into the ring or else into L2.
  bool ring_primed = false;
  if (p.begin == nullptr && has_tile) {
    if constexpr (kFeed == Feed::kSmemRing) {
      const uint8_t* wrow0 = p.dense.w + (row_g * k_pad + 16 * t);
      for (int32_t i = 0; i < kRingStages - 1; ++i) {
        IssueRingBlock(ring, lane, wrow0, row8, i, blocks, kb_of(i));
      }
      ring_primed = true;
    } else {
      PrefetchFirstPairs(p.dense.w + row_g * k_pad, kpart, p.ksplit, pairs, row8, t);
    }
  }
  if (p.begin == nullptr) KernelPrologue();
  const uint8_t* wrow = nullptr;  // this lane's bytes of weight row c0 + g in k-block 0
  const float* srow = nullptr;    // the tile's block scales (16 | 128: one per k-block)
  if (has_tile) {
    const GroupedWeight gw =
        p.begin != nullptr ? p.weights[e * p.weights_stride + p.first + m] : p.dense;
    int32_t row_stride = k_pad;
    if constexpr (kFeed == Feed::kRegisterRing) {
      const WeightStrides st = StridesOf(gw.k_block_major, p.n, k_pad);
      row_stride = st.row;
      row8 = 8 * st.row;
      kb_stride = st.kb;
    }
    wrow = gw.w + (row_g * row_stride + 16 * t);
    srow = gw.s + c0 / 128 * p.scale_stride;
  }
  auto load_tokens = [&](int32_t base, int32_t kb, uint4(&raw)[2], float& sa, float& sb) {
    LoadTokenFragment(p.xq, p.xs, k_pad, rows_padded, base, r_end, kb, g, t, raw, sa, sb);
  };
  for (int32_t r0 = r_begin; r0 < r_end; r0 += kTiles * kTokens) {
    float acc[kTiles][4] = {};
    if constexpr (kFeed == Feed::kSmemRing) {
      static_assert(kTiles == 1);
      // cp.async fills the ring kRingStages - 1 blocks ahead of the arithmetic. A lane reads back
      // only what it copied, so the wait is per thread (cp.async.wait_group) and no barrier is
      // needed. The tokens' fragment of block i loads (from L1, which every warp of the block
      // shares) before the wait.
      if (!ring_primed) {
        for (int32_t i = 0; i < kRingStages - 1; ++i) {
          IssueRingBlock(ring, lane, wrow, row8, i, blocks, kb_of(i));
        }
      }
      ring_primed = false;  // a next chunk of rows primes its own
      for (int32_t i = 0; i < blocks; ++i) {
        const int32_t kb = kb_of(i);
        IssueRingBlock(ring, lane, wrow, row8, i + kRingStages - 1, blocks,
                       kb_of(i + kRingStages - 1));
        uint4 x[2];
        float xsa, xsb;
        load_tokens(r0, kb, x, xsa, xsb);
        const float ws = __ldg(srow + kb);
        CpAsyncWait<kRingStages - 1>();  // block i has landed
        const uint4* slot = ring + (i % kRingStages) * 4 * 32 + lane;
        const uint4 wg_raw[2] = {slot[0], slot[32]}, wg8_raw[2] = {slot[64], slot[96]};
        uint32_t wg[16], wg8[16];
        ToF16(wg, wg_raw);
        ToF16(wg8, wg8_raw);
        AccumulateBlock(acc[0], wg, wg8, x, ws, xsa, xsb);
      }
    } else if constexpr (kFeed == Feed::kRegisterRing) {
      static_assert(kTiles == 1);
      // A ring of three blocks holds a pair's lookahead (two pairs' buffers would spill at 128
      // registers).
      BlockOperands ops[3];
      auto load = [&](int32_t i, BlockOperands& q) {
        const int32_t kb = kb_of(i);
        LoadWeightBlock<true>(wrow + kb * kb_stride, row8, q.g, q.g8);
        q.ws = __ldg(srow + kb);
        load_tokens(r0, kb, q.x, q.xsa, q.xsb);
      };
      if (blocks > 0) {  // then at least a pair
        load(0, ops[0]);
        load(1, ops[1]);
      }
      for (int32_t i = 0; i < blocks; i += 3) {
#pragma unroll
        for (int s = 0; s < 3; ++s) {  // ops[s] holds block i + s
          if (i + s >= blocks) break;
          if (i + s + 2 < blocks) load(i + s + 2, ops[(s + 2) % 3]);
          uint32_t wg[16], wg8[16];
          ToF16(wg, ops[s].g);
          ToF16(wg8, ops[s].g8);
          AccumulateBlock(acc[0], wg, wg8, ops[s].x, ops[s].ws, ops[s].xsa, ops[s].xsb);
        }
      }
    } else {
      for (int32_t pr = kpart; has_tile && pr < pairs; pr += p.ksplit) {
        uint4 raw_g[2][2], raw_g8[2][2];  // [k-block of the pair][low, high 16 bytes]
        float ws[2];
        // [k-block][token tile] activations and their scales (rows 2t, 2t + 1), loaded with the
        // weights.
        uint4 raw_x[2][kTiles][2];
        float xsa[2][kTiles], xsb[2][kTiles];
#pragma unroll
        for (int b = 0; b < 2; ++b) {
          const int32_t kb = 2 * pr + b;
          LoadWeightBlock(wrow + kb * kb_stride, row8, raw_g[b], raw_g8[b]);
          ws[b] = __ldg(srow + kb);
#pragma unroll
          for (int j = 0; j < kTiles; ++j) {
            if (r0 + j * kTokens >= r_end) continue;  // warp-uniform
            load_tokens(r0 + j * kTokens, kb, raw_x[b][j], xsa[b][j], xsb[b][j]);
          }
        }
#pragma unroll
        for (int b = 0; b < 2; ++b) {
          uint32_t wg[16], wg8[16];
          ToF16(wg, raw_g[b]);
          ToF16(wg8, raw_g8[b]);
#pragma unroll
          for (int j = 0; j < kTiles; ++j) {
            const int32_t base = r0 + j * kTokens;
            if (base >= r_end) continue;  // warp-uniform
            AccumulateBlock(acc[j], wg, wg8, raw_x[b][j], ws[b], xsa[b][j], xsb[b][j]);
          }
        }
      }
    }
    if (p.ksplit > 1) {
      if (kpart != 0) {
#pragma unroll
        for (int j = 0; j < kTiles; ++j) {
#pragma unroll
          for (int i = 0; i < 4; ++i) partial[warp][j * 4 + i][lane] = acc[j][i];
        }
      }
      __syncthreads();
      if (kpart == 0) {
        for (int q = 1; q < p.ksplit; ++q) {
#pragma unroll
          for (int j = 0; j < kTiles; ++j) {
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[j][i] += partial[warp + q][j * 4 + i][lane];
          }
        }
      }
    }
    if (kpart == 0 && has_tile) {
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int32_t r = r0 + j * kTokens + 2 * t + (i & 1);
          const int64_t c = c0 + g + 8 * (i >> 1);
          float v = acc[j][i];
          if constexpr (kRope) {  // every lane takes the shuffle
            // As stored, then rotated with the pair's other column, which lane ^ 4 holds
            // (columns c0 + g: g even and odd are the pair).
            v = ToFloat(FromFloat<bf16>(v));
            const float other = __shfl_xor_sync(0xffffffffu, v, 4);
            const int64_t in_head = c % p.rope.head_cols - p.rope.rope_begin;
            if (r < r_end && in_head >= 0 && in_head < p.rope.rope_dim) {
              const RopeAngle a = RopeAngleAt(p.rope.inv_freq, p.rope.attention_factor,
                                              p.rope.positions[r], in_head / 2);
              v = in_head % 2 == 0 ? RotatedFirst(v, other, a) : RotatedSecond(other, v, a);
            }
          }
          if (r >= r_end || c >= p.n) continue;
          const int64_t o = r * p.y_stride + m * p.n + c;
          if (p.y_f32) {
            static_cast<float*>(p.y)[o] = v;
          } else {
            static_cast<bf16*>(p.y)[o] = FromFloat<bf16>(v);
          }
        }
      }
    }
    if (p.ksplit > 1) __syncthreads();  // `partial` is rewritten by the next chunk
  }
}

// kRope: with the output's RoPE (MmaGemmArgs::rope; dense launches), a kernel of its own so that
// the others keep their code.
template <int kTiles, Feed kFeed, bool kRope = false>
__global__ void __launch_bounds__(kMaxKSplit * 32) Fp8MmaGemmKernel(MmaGemmArgs p) {
  __shared__ float partial[kMaxKSplit * kTiles * 4 * 32];
  Fp8MmaGemmBody<kTiles, kFeed, kRope>(p, partial);
}

// Waves of a grid of `blocks`: blocks over the SMs' slots, SMs x resident blocks of `kernel` at
// `threads` and `smem` bytes of dynamic shared memory (cached per thread: each rank's thread has
// its own device).
template <typename Kernel>
double Waves(Kernel kernel, int threads, size_t smem, int64_t blocks) {
  using Key = std::tuple<const void*, int, size_t>;
  thread_local std::map<Key, int64_t> slots;
  const Key key{reinterpret_cast<const void*>(kernel), threads, smem};
  auto it = slots.find(key);
  if (it == slots.end()) {
    int device = 0, sms = 0, per_sm = 0;
    DSV3_CUDA_CHECK(cudaGetDevice(&device));
    DSV3_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    DSV3_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    it = slots.emplace(key, static_cast<int64_t>(sms) * std::max(per_sm, 1)).first;
  }
  return static_cast<double>(blocks) / static_cast<double>(it->second);
}

// How full the grid's waves are on average (1: whole waves only).
double WaveFill(double waves) { return waves / std::ceil(waves); }

// A launch stepped back to one wave must fill at least this much of it (q_b at one row, 1536
// column tiles: 0.73 of a wave at a 2-way split; the dense gate|up at one row would fill 0.55
// unsplit and keeps the wave-fill rule's split instead).
constexpr double kOneWaveMinFill = 0.7;

using MmaKernel = void (*)(MmaGemmArgs);

// groups: grid rows (active expert slots, or 1 for a dense GEMM; a chunked launch's grid has
// a.chunks.max rows instead, and splits K as the same launch by groups would, whose sums it
// gives bit for bit). Grouped launches run one token tile on the register ring; dense ones the
// shared-memory ring up to 8 rows (max_group_rows), else kDenseTokTiles tiles. K is split while
// the launch is short of kTargetWarps and every warp keeps at least one pair of k-blocks. Where
// that spills over one wave, the largest smaller split whose launch fits one wave and fills at
// least kOneWaveMinFill of it is taken instead (a second, partly filled wave costs about a whole
// one: o_proj at one row, 448 column tiles, splits K 8 ways in 0.85 waves rather than 16 in
// 1.7). A grouped or ring launch of more than one wave (its blocks all take about the same time
// at decode sizes) whose waves are less than 80% full on average splits K once more where that
// fills them better (the 9 matrices of gate|up with the shared expert fused at batch 1: 576
// blocks, 2.2 waves; split once more, 4.4. The dense layer's gate|up on the ring: 576 blocks,
// 1.09 waves of the ring's 528 slots; split once more, 2.2).
void LaunchMmaGemm(MmaGemmArgs a, int64_t groups, int64_t max_group_rows, int forced_ksplit,
                   cudaStream_t stream) {
  assert(a.k_pad % 256 == 0);
  // The kernel's offsets are 32-bit: bytes within one weight matrix (its rows rounded up to whole
  // column tiles; V3's largest, the dense gate|up, is 36864 x 7168 = 264 MB) and within the
  // activations (a few rows where this kernel runs).
  assert(CeilDiv(a.n, kTileCols) * int64_t{kTileCols} * a.k_pad <= INT32_MAX);
  assert(a.rows_padded * a.k_pad <= INT32_MAX);
  const bool grouped = a.begin != nullptr;
  const bool ring = !grouped && max_group_rows <= kTokens;
  const bool chunked = a.chunks.expert != nullptr;
  // Dense: more than 16 rows would take several passes over the weights.
  const bool rope = a.rope.positions != nullptr;
  assert(!rope || !grouped);
  const MmaKernel kernel = ring ? (rope ? Fp8MmaGemmKernel<1, Feed::kSmemRing, true>
                                        : Fp8MmaGemmKernel<1, Feed::kSmemRing>)
                           : grouped ? Fp8MmaGemmKernel<1, Feed::kRegisterRing>
                           : rope    ? Fp8MmaGemmKernel<kDenseTokTiles, Feed::kPairs, true>
                                     : Fp8MmaGemmKernel<kDenseTokTiles, Feed::kPairs>;
  const int64_t tiles = a.mats * ((a.n + kTileCols - 1) / kTileCols);
  const int64_t pairs = a.k_pad / 256;
  auto warps = [](int ksplit) { return std::max(kBlockWarps, ksplit); };
  auto blocks = [&](int ksplit) { return CeilDiv(tiles, warps(ksplit) / ksplit) * groups; };
  auto smem = [&](int ksplit) -> size_t {
    return ring ? static_cast<size_t>(warps(ksplit)) * kRingStages * kRingStageBytes : 0;
  };
  auto may_split = [&](int ksplit) { return 2 * ksplit <= std::min<int64_t>(pairs, kMaxKSplit); };
  if (ring) {
    // Per launch rather than once: the attribute belongs to the current device. The same bound
    // every time, so that no launch lowers it under one that a captured graph replays. Before
    // the occupancy queries below: without it a ring of 48 KB or more fits no block.
    DSV3_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxRingBytes));
  }
  auto waves = [&](int ksplit) {
    return Waves(kernel, warps(ksplit) * 32, smem(ksplit), blocks(ksplit));
  };
  auto choose_ksplit = [&] {
    int ksplit = 1;
    while (tiles * groups * ksplit < kTargetWarps && may_split(ksplit)) ksplit *= 2;
    const double spilled = waves(ksplit);
    if (spilled <= 1) return ksplit;
    for (int fewer = ksplit / 2; fewer >= 1; fewer /= 2) {
      const double w = waves(fewer);
      if (w > 1) continue;
      if (w >= kOneWaveMinFill) return fewer;
      break;
    }
    if ((grouped || ring) && may_split(ksplit) && WaveFill(spilled) < 0.8 &&
        WaveFill(waves(2 * ksplit)) > WaveFill(spilled)) {
      return 2 * ksplit;
    }
    return ksplit;
  };
  assert(forced_ksplit == 0 || ((forced_ksplit & (forced_ksplit - 1)) == 0 &&
                                forced_ksplit <= std::min<int64_t>(pairs, kMaxKSplit)));
  a.ksplit = forced_ksplit > 0 ? forced_ksplit : choose_ksplit();
  const int64_t grid_rows = chunked ? a.chunks.max : groups;
  assert(grid_rows <= 65535);
  const dim3 grid(CeilDiv(tiles, warps(a.ksplit) / a.ksplit), static_cast<unsigned>(grid_rows));
  Launch(kernel, grid, warps(a.ksplit) * 32, smem(a.ksplit), stream, a);
}

}  // namespace

void GroupedFp8Gemm(const GroupedFp8GemmParams& p, cudaStream_t stream) {
  if (p.max_active == 0 || p.n == 0) return;
  const bool chunked = p.chunks.expert != nullptr && p.max_rows_per_group > kTokens;
  LaunchMmaGemm({p.xq,
                 p.xs,
                 p.rows_padded,
                 p.k_pad,
                 p.begin,
                 p.active,
                 p.num_active,
                 p.weights,
                 p.weights_stride,
                 p.first,
                 {},
                 0,
                 p.mats,
                 p.n,
                 p.scale_stride,
                 p.y,
                 p.y_stride,
                 p.y_f32,
                 1,
                 chunked ? p.chunks : GroupedChunks{},
                 RopeEpilogue{}},
                p.max_active, p.max_rows_per_group, p.ksplit, stream);
}

void DenseFp8Gemm(const DenseFp8GemmParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.n == 0) return;
  assert(!p.w.k_block_major);  // dense feeds read row-major weights
  assert(p.rope.positions == nullptr ||
         (!p.y_f32 && p.rope.head_cols % 2 == 0 && p.rope.rope_begin % 2 == 0 &&
          p.rope.rope_dim % 2 == 0 && p.rope.rope_begin + p.rope.rope_dim <= p.rope.head_cols));
  LaunchMmaGemm({p.xq, p.xs, p.rows_padded, p.k_pad, nullptr, nullptr, nullptr, nullptr, 0, 0, p.w,
                 p.rows, 1, p.n, p.scale_stride, p.y, p.y_stride, p.y_f32, 1, GroupedChunks{},
                 p.rope},
                1, p.rows, p.ksplit, stream);
}

}  // namespace dsv3::kernels
