// Small-M FP8 GEMMs on tensor cores (mma.sync), where a GEMM is a weight stream: the MoE
// experts of decode-sized batches without host synchronization (the routing permutation is built
// on the device, and each GEMM phase is one launch over every active expert), and dense FP8
// linears of a few rows, where cuBLASLt's fixed per-call cost would dominate.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/fp8_quant.cuh"
#include "kernels/weight_layout.cuh"

namespace dsv3::kernels {

// Rows per chunk: one mma's tokens.
constexpr int64_t kGroupedChunkRows = 8;

// Each expert's rows cut into chunks of kGroupedChunkRows rows (the last may be shorter),
// numbered expert by expert; MoeAlign writes them where `expert` is set, GroupedFp8Gemm reads
// them. Device arrays: begin [experts + 1] the first chunk of each expert, expert [max] the local
// expert of each chunk, count [1] the chunks in use; max a bound on them (MaxGroupedChunks).
struct GroupedChunks {
  int32_t* begin = nullptr;
  int32_t* expert = nullptr;
  int32_t* count = nullptr;
  int64_t max = 0;
};

// From topk ids [T * top_k] (global expert ids): the permuted layout of the rows routed to the
// local experts [expert_begin, expert_begin + experts). Rows are grouped expert by expert
// (order inside an expert unspecified). begin [experts + 1] row ranges; active [experts] the
// local ids of experts with rows, first num_active[0] entries; token_of [T * top_k] the token of
// each permuted row (rows past the routed count: token 0); row_of [T * top_k] the permuted row
// of each (token, j), -1 when the expert is not local. active_log (optional): num_active is
// also written there (benchmark statistics). experts <= 1024. Lengths above count the shared
// expert's entries when there is one.
struct MoeAlignParams {
  const int32_t* ids;
  int64_t entries;  // T * top_k
  int64_t top_k;
  int64_t expert_begin, experts;
  int32_t* begin;
  int32_t* active;
  int32_t* num_active;
  int32_t* token_of;
  int32_t* row_of;
  int32_t* active_log;
  // Optional tiles (tile_rows > 0): each expert's rows start on a multiple of tile_rows (begin and
  // row_of count padded rows), tile_expert [capacity_rows / tile_rows] gets the local expert of
  // each tile in use and num_tiles their count; token_of covers capacity_rows rows (padding: 0).
  int64_t tile_rows = 0;
  int32_t* tile_expert = nullptr;
  int32_t* num_tiles = nullptr;
  int64_t capacity_rows = 0;
  // Optional shared expert (>= 0: a local expert id): every token also goes to it, as the
  // entries [T * top_k, T * top_k + T) (token t's is T * top_k + t) that row_of and token_of
  // then cover too; active_log does not count it.
  int64_t shared_expert = -1;
  // Optional: each expert's rows [begin[e], begin[e+1]) cut into chunks (GroupedChunks).
  GroupedChunks chunks = {};
};
// One block on the device (kernels/moe_align.cu).
void MoeAlign(const MoeAlignParams& p, cudaStream_t stream);

// MoeAlign and the quantization of the routed rows (QuantizeActivations with x_rows = token_of)
// in one launch, for decode-sized steps, where each was a kernel on the step's latency path: at
// most kMoeAlignQuantizeMaxEntries entries (the shared expert's included), neither tiles nor
// chunks. Every block aligns the entries itself (counts per expert and their scan), rows inside
// an expert in entry order; block 0 writes MoeAlign's outputs, and each warp quantizes a (row,
// 128-column block) with the bits of QuantizeActivations. quantize: rows = the entries, x_rows
// unset (token_of is the gather), no up and no used_count.
inline constexpr int64_t kMoeAlignQuantizeMaxEntries = 256;
void MoeAlignQuantize(const MoeAlignParams& align, const QuantizeActivationsParams& quantize,
                      cudaStream_t stream);

// A bound on the chunks of `entries` rows (the shared expert's included) over `experts` local
// experts: sum over the active ones of ceil(rows / 8) <= (entries + 7 * active) / 8.
constexpr int64_t MaxGroupedChunks(int64_t entries, int64_t experts) {
  const int64_t active = experts < entries ? experts : entries;
  return (entries + (kGroupedChunkRows - 1) * active) / kGroupedChunkRows;
}

// One FP8 matrix: e4m3 codes w (WeightRowsPadded(N) rows, K_pad a multiple of 512, zeros past N
// and past K) laid out as k_block_major says (kernels/weight_layout.cuh), s its block scales
// [ceil(N/128), scale_stride] F32.
struct GroupedWeight {
  const uint8_t* w;
  const float* s;
  bool k_block_major = false;
};

// Both GEMMs below compute, per block of 128 k (kb), in F32:
//   y[r, c] = sum_kb (sum_{k in kb} xq[r, k] * w[c, k]) * xs[kb, r] * s[c / 128, kb]
// and write y rounded to its type. xq [rows_padded, k_pad] e4m3 and xs [k_pad / 128,
// rows_padded] F32 as QuantizeActivations writes them; k_pad a multiple of 512.

// For every active expert e (rows [begin[e], begin[e+1])) and each of `mats` matrices m of it:
// y[r, m * n + c], c < n, as BF16. Weights [experts, weights_stride] (the matrices of expert e
// from weights[e * weights_stride + first]). y [rows, mats * n] with row stride y_stride.
// max_active bounds num_active (the grid is sized from it).
struct GroupedFp8GemmParams {
  const uint8_t* xq;
  const float* xs;
  int64_t rows_padded, k_pad;
  const int32_t* begin;
  const int32_t* active;
  const int32_t* num_active;
  int64_t max_active;
  const GroupedWeight* weights;
  int64_t weights_stride, first, mats;
  int64_t n, scale_stride;
  void* y;
  int64_t y_stride;
  bool y_f32 = false;  // y F32 instead of BF16
  // A bound on any active expert's rows (T for a launch over T tokens: a token's top-k experts
  // are distinct, and the shared expert takes one row per token). Each block runs one token tile
  // (8 rows), loading each k-block a pair ahead of its arithmetic; a group of more rows goes
  // through its chunks of 8 one after another in the same blocks, or, given chunks, as blocks of
  // their own. Default: no bound known.
  int64_t max_rows_per_group = INT64_MAX;
  // MoeAlign's chunks: when set and some group may have more than kGroupedChunkRows rows, every
  // chunk of every group runs as blocks of its own, the chunks of one expert's column block next
  // to each other in launch order, so that they run together and read its weights from DRAM once
  // (L2 serves the others), instead of one block reading them once per chunk, mostly from DRAM
  // again. The K split is chosen as without chunks: the sums are the same bits.
  GroupedChunks chunks = {};
  // Warps sharing each column tile's k-blocks: 0 picks it by the launch's shape (the default);
  // a power of two up to min(16, k_pad / 256) forces it (dsv3-dense-gemm-bench --sweep-ksplit).
  int ksplit = 0;
};
void GroupedFp8Gemm(const GroupedFp8GemmParams& p, cudaStream_t stream);

// RoPE of a dense launch's output as it is stored (q_b's: q's rope part of every head), the bits
// of kernels::Rope on the stored BF16 output, interleaved pairs (2i, 2i + 1) only: row r at
// position positions[r], in every head_cols columns the columns [rope_begin, rope_begin +
// rope_dim) (even offsets and widths). positions null: none.
struct RopeEpilogue {
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;  // [rope_dim / 2]
  float attention_factor = 1.0f;
  int32_t head_cols = 0, rope_begin = 0, rope_dim = 0;
};

// One plain linear: rows [0, rows) of xq times the weight w (given by value: no device tables),
// y [rows, n] with row stride y_stride, BF16 or (y_f32) F32. Meant for rows <= ~16, where it
// streams the weight at memory speed; it is correct for any rows.
struct DenseFp8GemmParams {
  const uint8_t* xq;
  const float* xs;
  int64_t rows, rows_padded, k_pad;
  GroupedWeight w;
  int64_t n, scale_stride;
  void* y;
  int64_t y_stride;
  bool y_f32;
  int ksplit = 0;  // as GroupedFp8GemmParams::ksplit
  RopeEpilogue rope = {};  // BF16 y only
};
void DenseFp8Gemm(const DenseFp8GemmParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
