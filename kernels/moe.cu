#include <algorithm>
#include <cassert>

#include "kernels/device_utils.cuh"
#include "kernels/launch.cuh"
#include "kernels/moe.cuh"

namespace dsv3::kernels {

namespace {

constexpr int kMaxExperts = 1024;
constexpr int kMaxGroups = 64;

// A selection candidate: valid ones beat invalid ones, then the larger value, then the lower
// index: the order of the reference's serial scans (first best in index order wins ties).
struct Candidate {
  float value;
  int32_t index;
  bool valid;
};

__device__ __forceinline__ bool Beats(const Candidate& a, const Candidate& b) {
  if (a.valid != b.valid) return a.valid;
  if (a.value != b.value) return a.value > b.value;
  return a.index < b.index;
}

__device__ __forceinline__ float Sigmoid(float logit) { return 1.0f / (1.0f + expf(-logit)); }

// A choice score as a key whose unsigned order is Beats' order on values (NaN taken as -inf, -0
// as +0), so that a warp finds its best candidate with two redux instructions. Every key is at
// least -inf's, 0x007fffff: 0 marks a candidate already taken.
__device__ __forceinline__ uint32_t OrderedKey(float v) {
  if (isnan(v)) v = -INFINITY;
  const uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) != 0 ? ~u : u | 0x80000000u;
}

// OrderedKey's inverse on the values it keeps (-inf for NaN's key, +0 for -0's).
__device__ __forceinline__ float KeyValue(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) != 0 ? key & 0x7fffffffu : ~key);
}

// Token t's outputs from its picks (lane i < top_k holds pick i; all 32 lanes call it): weights
// from the uncorrected scores, summed in pick order as the reference adds.
__device__ void WritePicks(const MoeTopkParams& p, int64_t t, const float* logits,
                           int32_t my_pick) {
  const int lane = threadIdx.x % 32;
  const float s = lane < p.top_k ? Sigmoid(logits[my_pick]) : 0.0f;
  float sum = 0.0f;
  for (int i = 0; i < p.top_k; ++i) sum += __shfl_sync(0xffffffffu, s, i);
  if (lane < p.top_k) {
    const float denom = p.norm_topk_prob ? sum + 1e-20f : 1.0f;
    p.ids[t * p.ids_stride + lane] = my_pick;
    p.weights[t * p.weights_stride + lane] = s / denom * p.scaling;
  }
}

// Token t's selection by one warp (all 32 lanes call it), from its logits [E] F32 (global or
// shared memory): the reference's serial selections, each exact: a group's two best scores by a
// scan (a lane per group), the kept groups by rank, then top_k rounds, each taking the warp's best
// key (ties: the lower index). keys: the warp's scratch [E] in shared memory, group_score
// [groups]. Lane l owns experts l, l + 32, ...: their keys are read and written by it alone after
// the group scan, so the rounds need no barrier.
__device__ void SelectExperts(const MoeTopkParams& p, int64_t t, const float* logits,
                              uint32_t* keys, float* group_score) {
  const int lane = threadIdx.x % 32;
  const int experts = static_cast<int>(p.experts), groups = static_cast<int>(p.groups);
  const int group_size = experts / groups;
  for (int e = lane; e < experts; e += 32) {
    keys[e] = __float_as_uint(Sigmoid(logits[e]) + p.bias[e]);  // c, as bits until masked
  }
  __syncwarp();
  for (int g = lane; g < groups; g += 32) {
    // The two best do not depend on the scan's order: each lane starts at another column of its
    // group, so that the lanes' reads fall in different banks.
    const uint32_t* c = keys + g * group_size;
    float best = -INFINITY, second = -INFINITY;
    for (int n = 0, j = g % group_size; n < group_size; ++n, j = j + 1 == group_size ? 0 : j + 1) {
      const float v = __uint_as_float(c[j]);
      if (v > best) {
        second = best;
        best = v;
      } else if (v > second) {
        second = v;
      }
    }
    const float score = group_size >= 2 ? best + second : best;
    group_score[g] = isnan(score) ? -INFINITY : score;
  }
  __syncwarp();
  // The topk_groups best groups (ties: lower index) are those of rank below topk_groups.
  auto kept = [&](int g) {
    if (g >= groups) return false;
    int rank = 0;
    for (int j = 0; j < groups; ++j) {
      const float v = group_score[j], mine = group_score[g];
      rank += v > mine || (v == mine && j < g) ? 1 : 0;
    }
    return rank < p.topk_groups;
  };
  const uint32_t kept_low = __ballot_sync(0xffffffffu, kept(lane));        // groups [0, 32)
  const uint32_t kept_high = __ballot_sync(0xffffffffu, kept(lane + 32));  // [32, 64)
  for (int e = lane; e < experts; e += 32) {
    const int g = e / group_size;
    const bool keep = ((g < 32 ? kept_low >> g : kept_high >> (g - 32)) & 1u) != 0;
    keys[e] = OrderedKey(keep ? __uint_as_float(keys[e]) : -INFINITY);
  }
  int32_t my_pick = 0;  // lane i's: pick i
  for (int i = 0; i < p.top_k; ++i) {
    uint32_t best = 0, best_e = 0xffffffffu;  // the lane's first best: its lowest index
    for (int e = lane; e < experts; e += 32) {
      const uint32_t k = keys[e];
      if (k > best) {
        best = k;
        best_e = e;
      }
    }
    const uint32_t top = __reduce_max_sync(0xffffffffu, best);
    const uint32_t pick = __reduce_min_sync(0xffffffffu, best == top ? best_e : 0xffffffffu);
    if (static_cast<int>(pick % 32) == lane) keys[pick] = 0;
    if (lane == i) my_pick = static_cast<int32_t>(pick);
  }
  WritePicks(p, t, logits, my_pick);
}

// Tokens per block of MoeTopkRoundsKernel, one warp each.
constexpr int kTopkWarps = 4;

// Large steps (prefill): one warp per token (SelectExperts): O(E) work per pick; the ranks
// kernel below does O(E^2) per token and wins only where latency counts. Dynamic shared memory:
// the warps' keys [kTopkWarps][E].
__global__ void MoeTopkRoundsKernel(MoeTopkParams p) {
  KernelPrologue();
  extern __shared__ uint32_t topk_keys[];
  __shared__ float group_scores[kTopkWarps][kMaxGroups];
  const int warp = threadIdx.x / 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kTopkWarps + warp;
  if (t >= p.tokens) return;  // the whole warp: nothing below synchronizes the block
  SelectExperts(p, t, p.logits + t * p.experts, topk_keys + warp * p.experts, group_scores[warp]);
}

constexpr int kMaxTopK = 32;
// Tokens up to which MoeTopk ranks (MoeTopkRanksKernel) instead of running rounds: on the H200
// with V3's 256 experts in 8 groups and top 8, ranking was twice as fast at batch 1 (a decode
// step's latency) and three times slower at 4096 tokens (docs/cuda.md), measured against the
// rounds before SelectExperts' keys.
constexpr int64_t kRanksMaxTokens = 256;

// The number of candidates among [begin, end) that beat `mine` (values from `value`, all valid).
// Beats is a strict total order on non-NaN values, so the ranks of distinct candidates differ.
template <typename Value>
__device__ __forceinline__ int RankAmong(const Candidate& mine, int64_t begin, int64_t end,
                                         Value&& value) {
  int rank = 0;
  for (int64_t j = begin; j < end; ++j) {
    rank += Beats(Candidate{value(j), static_cast<int32_t>(j), true}, mine) ? 1 : 0;
  }
  return rank;
}

// Decode-sized steps: one block per token, one thread per expert. Each of the reference's serial
// selections (its groups' two best scores, the topk_groups best groups, the top_k best experts)
// takes the candidates of rank < k, where a candidate's rank is the number of candidates that
// beat it: the same picks in the same order, without a round per pick. NaN scores count as -inf
// (a total order keeps every rank distinct, so every output slot is written).
__global__ void MoeTopkRanksKernel(MoeTopkParams p) {
  KernelPrologue();
  __shared__ float s[kMaxExperts], c[kMaxExperts];
  __shared__ float best[kMaxGroups], second[kMaxGroups];
  __shared__ bool keep[kMaxGroups];
  __shared__ float picked[kMaxTopK];  // s of the picks, by rank
  const int64_t t = blockIdx.x;
  const int e = threadIdx.x;
  const bool is_expert = e < p.experts;
  const int64_t group_size = p.experts / p.groups, group = e / group_size;
  if (is_expert) {
    s[e] = Sigmoid(p.logits[t * p.experts + e]);
    const float v = s[e] + p.bias[e];
    c[e] = isnan(v) ? -INFINITY : v;
  }
  __syncthreads();
  if (is_expert) {
    const int rank = RankAmong({c[e], e, true}, group * group_size, (group + 1) * group_size,
                               [&](int64_t j) { return c[j]; });
    if (rank == 0) best[group] = c[e];
    if (rank == 1) second[group] = c[e];
  }
  __syncthreads();
  auto group_score = [&](int64_t g) { return group_size >= 2 ? best[g] + second[g] : best[g]; };
  if (e < p.groups) {
    keep[e] = RankAmong({group_score(e), e, true}, 0, p.groups, group_score) < p.topk_groups;
  }
  __syncthreads();
  if (is_expert && !keep[group]) c[e] = -INFINITY;
  __syncthreads();
  if (is_expert) {
    const int rank = RankAmong({c[e], e, true}, 0, p.experts, [&](int64_t j) { return c[j]; });
    if (rank < p.top_k) {
      p.ids[t * p.ids_stride + rank] = e;
      picked[rank] = s[e];
    }
  }
  __syncthreads();
  if (e < p.top_k) {
    float sum = 0.0f;  // in pick order, as the reference adds
    for (int64_t i = 0; i < p.top_k; ++i) sum += picked[i];
    const float denom = p.norm_topk_prob ? sum + 1e-20f : 1.0f;
    p.weights[t * p.weights_stride + e] = picked[e] / denom * p.scaling;
  }
}

// MoeRouterTopkKernel's shape: a warp per expert row, kRouterRows rows per block; each lane
// loads up to kRouterChunksPerLane 16-byte chunks of its row (all of its share of a split) before
// the programmatic wait; at most kRouterMaxSplits splits of hidden.
constexpr int kRouterRows = 8;
constexpr int kRouterChunksPerLane = 8;
constexpr int kRouterMaxSplits = 16;
constexpr int kRouterMaxSplitChunks = 32 * kRouterChunksPerLane;  // = the block's threads
static_assert(kMoeRouterMaxTokens <= kRouterRows, "the last block selects with a warp per token");
// Dynamic shared memory at most: logits and keys [T][E] for the selection (x's columns of a
// split, [T][kRouterMaxSplitChunks] x 16 bytes, take less).
constexpr size_t kRouterMaxSmem = kMoeRouterMaxTokens * kMaxExperts * 2 * sizeof(float);

// Whether MoeRouterTopkKernel's last block selects a one-token step with all its warps
// (SelectOneTokenBlockwide): groups of exactly 32 experts, a warp for each (V3's 256 experts in
// 8 groups). Other shapes and steps keep a warp per token (SelectExperts).
__device__ __forceinline__ bool BlockwideSelectionFits(const MoeTopkParams& p) {
  return p.tokens == 1 && p.experts == p.groups * 32 && p.groups <= kRouterRows;
}

// Token 0's selection by the whole block (every thread calls it): the same picks, order and
// weights as SelectExperts, by ranks instead of rounds. Warp g holds group g, lane l expert
// 32 g + l and its key. A group's score from its two best keys (redux), the kept groups by rank;
// each expert's rank in its group by shuffles, the group's top_k best becoming candidates; the
// top_k best of the kept groups lie among them, and candidate c is pick r when r candidates beat
// it. A candidate is one 64-bit value, key then complemented index, so that the larger value
// wins and equal keys go to the lower index, as in SelectExperts. logits [E], candidates
// [groups * top_k] and the picks [top_k] in shared memory.
__device__ void SelectOneTokenBlockwide(const MoeTopkParams& p, const float* logits,
                                        float* group_score, uint64_t* candidates,
                                        int32_t* picks) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int groups = static_cast<int>(p.groups), top_k = static_cast<int>(p.top_k);
  const int e = static_cast<int>(threadIdx.x);
  uint32_t key = 0;
  if (warp < groups) {
    key = OrderedKey(Sigmoid(logits[e]) + p.bias[e]);
    const uint32_t best = __reduce_max_sync(0xffffffffu, key);
    const uint32_t first = __reduce_min_sync(0xffffffffu, key == best ? lane : 32u);
    const uint32_t second = __reduce_max_sync(0xffffffffu, lane == first ? 0u : key);
    const float score = KeyValue(best) + KeyValue(second);  // the multiset's two best
    if (lane == 0) group_score[warp] = isnan(score) ? -INFINITY : score;
  }
  __syncthreads();
  if (warp < groups) {
    const int group_rank = RankAmong({group_score[warp], warp, true}, 0, groups,
                                     [&](int64_t j) { return group_score[j]; });
    if (group_rank >= p.topk_groups) key = OrderedKey(-INFINITY);
    int rank = 0;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const uint32_t other = __shfl_sync(0xffffffffu, key, j);
      rank += other > key || (other == key && j < lane) ? 1 : 0;
    }
    if (rank < top_k) {
      candidates[warp * top_k + rank] = uint64_t{key} << 32 | ~static_cast<uint32_t>(e);
    }
  }
  __syncthreads();
  if (e < groups * top_k) {
    const uint64_t mine = candidates[e];
    int rank = 0;
    for (int j = 0; j < groups * top_k; ++j) rank += candidates[j] > mine ? 1 : 0;
    if (rank < top_k) picks[rank] = static_cast<int32_t>(~static_cast<uint32_t>(mine));
  }
  __syncthreads();
  if (warp == 0) WritePicks(p, 0, logits, lane < top_k ? picks[lane] : 0);
}

// Grid (splits, ceil(E / kRouterRows)). Block (s, b): the partial logits of experts [8b, 8b + 8)
// over split s of hidden, for every token: warp w dots row 8b + w, lane l its split's 16-byte
// chunks l, l + 32, ... (F32, a chunk's 8 products in order), summed over the warp, into
// partials [s, t, e]. The router is never written by a step, so its loads go out before the
// programmatic wait and stream while the kernel before finishes; x is read after it, staged once
// per block in shared memory ([T][split chunks]), where all 8 warps read it. The last block to
// take a ticket sums the splits in order (the same logits whichever block is last) into shared
// logits [T][E] and selects: one token with the whole block where its groups fit
// (SelectOneTokenBlockwide), else a warp per token (SelectExperts). Dynamic shared memory: the
// staged x, then, in the last block, logits and keys [T][E] (one token: logits, candidates).
__global__ void __launch_bounds__(kRouterRows * 32) MoeRouterTopkKernel(MoeRouterTopkParams p) {
  extern __shared__ uint4 router_smem[];
  __shared__ float group_scores[kRouterRows][kMaxGroups];
  __shared__ bool is_last;
  __shared__ int32_t picks[kMaxTopK];  // the one-token selection's (SelectOneTokenBlockwide)
  const MoeTopkParams& q = p.topk;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int tokens = static_cast<int>(q.tokens), experts = static_cast<int>(q.experts);
  const int row = static_cast<int>(blockIdx.y) * kRouterRows + warp;
  const bool has_row = row < experts;
  const int chunks = static_cast<int>(p.hidden / 8);
  const int split_chunks = (chunks + p.splits - 1) / p.splits;
  const int begin = static_cast<int>(blockIdx.x) * split_chunks;
  const int width = max(0, min(chunks, begin + split_chunks) - begin);  // <= the block's threads
  const uint4* w_row = reinterpret_cast<const uint4*>(static_cast<const bf16*>(p.router) +
                                                      (has_row ? row : 0) * p.router_stride) +
                       begin;
  uint4 w[kRouterChunksPerLane];
#pragma unroll
  for (int i = 0; i < kRouterChunksPerLane; ++i) {
    const int c = lane + 32 * i;
    w[i] = has_row && c < width ? __ldg(w_row + c) : make_uint4(0, 0, 0, 0);
  }
  // The bias is a weight too: in L2 by the time the last block selects (a 128-byte line each).
  if (blockIdx.x == 0 && blockIdx.y == 0 && static_cast<int>(threadIdx.x) * 32 < experts) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(q.bias + threadIdx.x * 32));
  }
  KernelPrologue();
  uint4* xs = router_smem;  // [T][width]
  if (static_cast<int>(threadIdx.x) < width) {
    uint4 column[kMoeRouterMaxTokens];  // every token's loads in flight before the first store
#pragma unroll
    for (int t = 0; t < kMoeRouterMaxTokens; ++t) {
      if (t < tokens) {
        const uint4* x_row =
            reinterpret_cast<const uint4*>(static_cast<const bf16*>(p.x) + t * p.x_stride);
        column[t] = __ldg(x_row + begin + threadIdx.x);
      }
    }
#pragma unroll
    for (int t = 0; t < kMoeRouterMaxTokens; ++t) {
      if (t < tokens) xs[t * width + threadIdx.x] = column[t];
    }
  }
  __syncthreads();
  float acc[kMoeRouterMaxTokens] = {};
#pragma unroll
  for (int i = 0; i < kRouterChunksPerLane; ++i) {
    const int c = lane + 32 * i;
    if (!has_row || c >= width) break;
    float wf[8];
    Bf16x8ToFloats(w[i], wf);
#pragma unroll
    for (int t = 0; t < kMoeRouterMaxTokens; ++t) {
      if (t >= tokens) break;
      const uint4 raw = xs[t * width + c];  // one 16-byte load, then unpacked
      float xf[8];
      Bf16x8ToFloats(raw, xf);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[t] = fmaf(wf[j], xf[j], acc[t]);
    }
  }
  float mine = 0.0f;  // lane t stores token t's sum
#pragma unroll
  for (int t = 0; t < kMoeRouterMaxTokens; ++t) {
    if (t >= tokens) break;
    const float sum = WarpSum(acc[t]);
    if (lane == t) mine = sum;
  }
  const int plane = tokens * experts;  // one split's partials [T, E]
  if (has_row && lane < tokens) {
    p.partials[static_cast<int64_t>(blockIdx.x) * plane + lane * experts + row] = mine;
  }
  // The fence orders this block's partials before its ticket; atomicInc wraps to 0 at the block
  // count, so the counter is 0 again after every launch (graph replays need no reset).
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned blocks = gridDim.x * gridDim.y;
    is_last = atomicInc(p.ticket, blocks - 1) == blocks - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  float* logits = reinterpret_cast<float*>(router_smem);         // [T][E], over the staged x
  uint32_t* keys = reinterpret_cast<uint32_t*>(logits + plane);  // [T][E]
#pragma unroll 4
  for (int i = threadIdx.x; i < plane; i += blockDim.x) {
    float v = 0.0f;
#pragma unroll
    for (int s = 0; s < kRouterMaxSplits; ++s) {
      if (s < p.splits) v += __ldcg(p.partials + s * plane + i);  // other SMs' writes: from L2
    }
    logits[i] = v;
  }
  __syncthreads();
  if (BlockwideSelectionFits(q)) {
    SelectOneTokenBlockwide(q, logits, group_scores[0], reinterpret_cast<uint64_t*>(keys),
                            picks);
  } else if (warp < tokens) {
    SelectExperts(q, warp, logits + warp * experts, keys + warp * experts, group_scores[warp]);
  }
}

// Grid (column chunks, tokens). kVector: 8 columns per thread and access (Vectorizable): one
// 16-byte load per expert row instead of eight 2-byte ones. The sum runs over j in order either
// way, so both give the same values.
template <bool kVector>
__global__ void MoeCombineKernel(MoeCombineParams p) {
  KernelPrologue();
  const int64_t t = blockIdx.y;
  constexpr int kWidth = kVector ? 8 : 1;
  for (int64_t d = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
       d < p.hidden; d += static_cast<int64_t>(gridDim.x) * blockDim.x * kWidth) {
    // Row `row` of y at columns [d, d + kWidth), as F32.
    auto load = [&](int64_t row, float(&y)[kWidth]) {
      if constexpr (kVector) {
        Load8(p.y, row * p.y_stride + d, p.y_type, y);
      } else {
        y[0] = LoadAs(p.y, row * p.y_stride + d, p.y_type);
      }
    };
    float acc[kWidth] = {};
    for (int64_t j = 0; j < p.top_k; ++j) {
      const int32_t row = p.row_of[t * p.top_k + j];
      if (row < 0) continue;
      const float w = p.weights[t * p.weights_stride + j];
      float y[kWidth];
      load(row, y);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) {
        // F32 rows stand for the routed experts' BF16 outputs (see MoeCombineParams).
        if (p.y_type == ElemType::kF32) y[i] = ToFloat(FromFloat<bf16>(y[i]));
        acc[i] += w * y[i];
      }
    }
    if (p.shared_row != nullptr) {
      // Rounded as the routed sum would be stored, then added as the shared expert's separate
      // output would be (Add): the same values as running it apart from the same GEMM results.
      if (p.out_type == ElemType::kBF16) {
#pragma unroll
        for (int i = 0; i < kWidth; ++i) acc[i] = ToFloat(FromFloat<bf16>(acc[i]));
      }
      float y[kWidth];
      load(p.shared_row[t], y);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) acc[i] += y[i];
    }
    if constexpr (kVector) {
      Store8(p.out, t * p.out_stride + d, acc, p.out_type);
    } else {
      StoreAs(p.out, t * p.out_stride + d, acc[0], p.out_type);
    }
  }
}

}  // namespace

void MoeTopk(const MoeTopkParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  assert(p.experts <= kMaxExperts && p.groups <= kMaxGroups && p.top_k <= kMaxTopK &&
         p.top_k <= p.experts && p.experts % p.groups == 0);
  if (p.tokens <= kRanksMaxTokens) {
    Launch(MoeTopkRanksKernel, static_cast<unsigned>(p.tokens), (p.experts + 31) / 32 * 32, 0,
           stream, p);
    return;
  }
  // The warps' keys; E <= kMaxExperts keeps them at 16 KB.
  const size_t keys = kTopkWarps * p.experts * sizeof(uint32_t);
  Launch(MoeTopkRoundsKernel, CeilDiv(p.tokens, kTopkWarps), kTopkWarps * 32, keys, stream, p);
}

bool MoeRouterTopkFits(const MoeRouterTopkParams& p) {
  return p.topk.tokens <= kMoeRouterMaxTokens && p.topk.experts <= kMaxExperts &&
         p.hidden <= int64_t{kRouterMaxSplits} * kRouterMaxSplitChunks * 8 &&
         Vectorizable(p.hidden, {{p.x, p.x_stride}, {p.router, p.router_stride}});
}

int MoeRouterSplits(int64_t experts, int64_t hidden, int multiprocessors) {
  const int64_t blocks = CeilDiv(experts, kRouterRows), chunks = hidden / 8;
  // Splits of at least a chunk per lane (a block's x staging and warp sums pay per split), no
  // more than fill the SMs, and enough that a split fits the loads issued before the wait.
  const int64_t fill = std::min<int64_t>(multiprocessors / blocks, chunks / 32);
  const int64_t least = std::max(1, CeilDiv(chunks, kRouterMaxSplitChunks));
  return static_cast<int>(std::clamp<int64_t>(fill, least, kRouterMaxSplits));
}

void MoeRouterTopk(const MoeRouterTopkParams& p, cudaStream_t stream) {
  const MoeTopkParams& q = p.topk;
  if (q.tokens == 0) return;
  assert(MoeRouterTopkFits(p) && p.splits >= 1 && p.splits <= kRouterMaxSplits &&
         p.splits * kRouterMaxSplitChunks >= p.hidden / 8 && q.groups <= kMaxGroups &&
         q.top_k <= kMaxTopK && q.top_k <= q.experts && q.experts % q.groups == 0);
  const int64_t split_chunks = CeilDiv(p.hidden / 8, p.splits);
  // The selection's share: logits and keys [T][E], at one token logits [E] and 64-bit
  // candidates, at most [E] (SelectOneTokenBlockwide).
  const size_t smem = std::max(q.tokens * split_chunks * sizeof(uint4),
                               std::max<int64_t>(2 * q.tokens, 3) * q.experts * sizeof(float));
  if (smem > 48 * 1024) {
    // Per launch rather than once: the attribute belongs to the current device. Always the same
    // bound, so that no launch lowers it under one that a captured graph replays.
    DSV3_CUDA_CHECK(cudaFuncSetAttribute(MoeRouterTopkKernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kRouterMaxSmem)));
  }
  const dim3 grid(p.splits, CeilDiv(q.experts, kRouterRows));
  Launch(MoeRouterTopkKernel, grid, kRouterRows * 32, smem, stream, p);
}

void MoeCombine(const MoeCombineParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  if (Vectorizable(p.hidden, {{p.y, p.y_stride}, {p.out, p.out_stride}})) {
    const dim3 grid(CeilDiv(p.hidden, 256 * 8), static_cast<unsigned>(p.tokens));
    Launch(MoeCombineKernel<true>, grid, 256, 0, stream, p);
  } else {
    const dim3 grid(CeilDiv(p.hidden, 256 * 4), static_cast<unsigned>(p.tokens));
    Launch(MoeCombineKernel<false>, grid, 256, 0, stream, p);
  }
}

}  // namespace dsv3::kernels
