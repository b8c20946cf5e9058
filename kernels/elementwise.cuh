// Row-wise and elementwise kernels of the CUDA backend: embedding, RMSNorm, add, SiLU-gate,
// row gather, scatter-sums and padding, rotary embedding, 2-D copies with type conversion,
// random fills.
// All activations are BF16 unless a field says otherwise; strides are in elements.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/elem_type.h"

namespace dsv3::kernels {

// out[t, :] = table[ids[t] - first_row, :]. table [rows, H] BF16, ids [T] (device), out [T, H]
// BF16 or F32 (the residual stream).
struct EmbeddingParams {
  const void* table;  // rows [first_row, first_row + rows) of the embedding
  const int32_t* ids;
  void* out;  // ids outside the table's rows give zeros (another rank's shard)
  int64_t out_stride;
  int64_t tokens, hidden;
  int64_t first_row, rows;
  ElemType out_type = ElemType::kBF16;
};
void Embedding(const EmbeddingParams& p, cudaStream_t stream);

// out = x / sqrt(mean(x^2) + eps) * weight per row. x, out [rows, dim] (may alias when their
// types agree), weight F32. x is BF16 or F32 (the residual stream), out BF16 or F32.
// With `add` (the residual add before a norm, one kernel instead of two): x = x + add first,
// rounded to x's type and written back to x, which must then be writable; the norm is of that
// sum. Equal bits to a Binary kAdd into x and then the norm whenever x, add and out take
// 16-byte accesses (Vectorizable), which picks the same summation order.
struct RmsNormParams {
  const void* x;
  int64_t x_stride;
  const float* weight;
  void* out;
  int64_t out_stride;
  int64_t rows, dim;
  float eps;
  ElemType x_type = ElemType::kBF16;
  ElemType out_type = ElemType::kBF16;
  const void* add = nullptr;  // [rows, dim] with row stride add_stride
  int64_t add_stride = 0;
  ElemType add_type = ElemType::kF32;
};
void RmsNorm(const RmsNormParams& p, cudaStream_t stream);
// Rows from which RmsNorm and RmsNormQuantize give each row a block of 256 threads (prefill:
// several rows in flight per SM) instead of 1024 (decode: one row's passes in one access per
// thread). Both pick by the same rule, so their sums agree at any row count.
constexpr int64_t kNormManyRows = 512;

// The norm (p.norm.out BF16) and the 1x128 FP8 quantization of its output for the
// linear after it, in one kernel: q [rows_padded, cols_padded] e4m3 and scales [cols_padded /
// 128, rows_padded] exactly as QuantizeActivations writes them from p.out (padding q = 0,
// scale 1). The same bits as RmsNorm then QuantizeActivations.
struct RmsNormQuantizeParams {
  RmsNormParams norm;
  uint8_t* q;
  float* scales;
  int64_t rows_padded, cols_padded;  // cols_padded a multiple of 128, >= dim
  bool ue8m0;
};
void RmsNormQuantize(const RmsNormQuantizeParams& p, cudaStream_t stream);

// out = a + b (kind kAdd) or silu(a) * b (kind kSiluMul). [rows, cols], outputs may alias inputs.
// Each operand is BF16 or F32; the arithmetic is F32 and the result is rounded once.
enum class BinaryKind : uint8_t { kAdd, kSiluMul };
struct BinaryParams {
  const void* a;
  int64_t a_stride;
  const void* b;
  int64_t b_stride;
  void* out;
  int64_t out_stride;
  int64_t rows, cols;
  BinaryKind kind;
  ElemType a_type = ElemType::kBF16, b_type = ElemType::kBF16, out_type = ElemType::kBF16;
};
void Binary(const BinaryParams& p, cudaStream_t stream);

// out[r, :] = x[rows[r], :] for rows [n] (device); elements of `type` (F32 or BF16).
struct GatherRowsParams {
  const void* x;
  int64_t x_stride;
  const int32_t* rows;
  void* out;
  int64_t out_stride;
  int64_t n, cols;
  ElemType type;
};
void GatherRows(const GatherRowsParams& p, cudaStream_t stream);

// out[i, :] = sum over j in [begin[i], begin[i + 1]) of x[sources[j], :], in ascending j, in F32
// from zero, rounded once to out_type (GatherRows' inverse with sums: the expert-parallel
// combine). begin [n + 1] and sources [begin[n]] are device arrays; an empty range gives zeros.
// x [R, cols] and out [n, cols] are F32 or BF16. Each output element is one thread's sum in a
// fixed order: deterministic, no atomics.
struct ScatterSumRowsParams {
  const void* x;
  int64_t x_stride;
  ElemType x_type;
  const int32_t* begin;
  const int32_t* sources;
  void* out;
  int64_t out_stride;
  ElemType out_type;
  int64_t n, cols;
};
void ScatterSumRows(const ScatterSumRowsParams& p, cudaStream_t stream);

// out[r, :] = x[r, :] (bits) for r < rows, and `fill_bits` in every element of rows [rows,
// out_rows): a block padded to a fixed row count. Elements of elem_bytes (2: BF16, 4: F32 or
// I32); x [rows, cols], out [out_rows, cols].
struct PadRowsParams {
  const void* x;
  int64_t x_stride;
  void* out;
  int64_t out_stride;
  int64_t rows, out_rows, cols;
  int elem_bytes;
  uint32_t fill_bits;  // the low elem_bytes bytes
};
void PadRows(const PadRowsParams& p, cudaStream_t stream);

// out[i, :] = sum over b in [0, blocks) of x[b * block_rows + i, :], in ascending b, in F32 from
// zero, rounded once to out_type (ScatterSumRows with the index [0, block_rows) repeated, fixed
// by the sizes). x [blocks * block_rows, cols], out [n, cols], n <= block_rows; F32 or BF16.
struct SumRowBlocksParams {
  const void* x;
  int64_t x_stride;
  ElemType x_type;
  int64_t blocks, block_rows;
  void* out;
  int64_t out_stride;
  ElemType out_type;
  int64_t n, cols;
};
void SumRowBlocks(const SumRowBlocksParams& p, cudaStream_t stream);

// Rotates x [tokens, heads, rope_dim] in place at positions[t] (device); angle = inv_freq[i] *
// position in F32 as the CPU reference computes it; cos and sin times attention_factor.
struct RopeParams {
  void* x;
  int64_t token_stride, head_stride;
  int64_t tokens, heads, rope_dim;
  const int32_t* positions;
  const float* inv_freq;  // [rope_dim / 2], device
  float attention_factor;
  bool interleaved;
};
void Rope(const RopeParams& p, cudaStream_t stream);

// MLA's inputs of a step in one kernel, the same bits as its parts: RmsNorm(norm) in place
// (x == out, BF16: c, [T, kv_lora]), Rope(k_rope) (k_pe, one head) and Rope(q_rope) (q_pe),
// then each token's row [c | k_pe] (kv_dim = kv_lora + rope values) written to cache row
// slot_mapping[t] (WriteKvCache).
struct MlaInputsParams {
  RmsNormParams norm;
  RopeParams k_rope, q_rope;
  const int64_t* slot_mapping;  // [T] device
  void* cache;                  // BF16 rows of kv_dim
  int64_t kv_dim;
};
void MlaInputs(const MlaInputsParams& p, cudaStream_t stream);

// RmsNormQuantize(q) and MlaInputs(l) without its q_pe part (l.q_rope unused), as one launch: the
// same bits. l's tokens at most q's padded rows.
void RmsNormQuantizeMlaLatents(const RmsNormQuantizeParams& q, const MlaInputsParams& l,
                               cudaStream_t stream);

// dst[r, c] = convert(src[r, c]) for [rows, cols]; F32, BF16 or I32 sources, F32 or BF16
// destinations.
struct Copy2DParams {
  const void* src;
  int64_t src_stride;
  ElemType src_type;
  void* dst;
  int64_t dst_stride;
  ElemType dst_type;
  int64_t rows, cols;
};
void Copy2D(const Copy2DParams& p, cudaStream_t stream);

// Fills n elements from a counter-based generator keyed by seed: BF16/F32 get mean + uniform in
// [-scale, scale]; F8_E4M3 gets a rounded normal of standard deviation `scale`, clamped to 448.
struct RandomFillParams {
  void* out;
  int64_t n;
  ElemType type;
  float mean, scale;
  uint64_t seed;
};
void RandomFill(const RandomFillParams& p, cudaStream_t stream);

}  // namespace dsv3::kernels
