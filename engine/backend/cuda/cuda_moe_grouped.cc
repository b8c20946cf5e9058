// The FP8 MoE experts on the device, with no host synchronization: MoeAlign groups the routed
// rows expert by expert, the routed rows' activations are gathered and quantized in one pass
// (large batches: each token quantized once, its codes then gathered), one grouped GEMM
// launch computes gate|up of every active expert, the SiLU-gate is fused into the next
// quantization (large batches: into gate|up's launch, which writes down's quantized input),
// one launch computes down, and MoeCombine sums each token's weighted rows. In
// steps of a few routed rows (V3's one-token decode) MoeAlign and the routed rows' quantization
// are one launch (MoeAlignQuantize).
// Two layouts and kernels:
// - decode-sized batches: rows packed expert by expert, the small-M tensor-core kernel of
//   kernels/moe_grouped.cu (a few rows per expert: a weight stream);
// - large batches (prefill, `tiled`): each expert's rows padded to whole tiles of
//   kGroupedTileRows rows, the wgmma kernel of kernels/fp8_grouped_gemm.cu over the tiles. The
//   buffers are sized for the most tiles the batch could need; MoeAlign writes the count in use,
//   which the GEMM and the quantization read on the device.
#include <algorithm>

#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/moe.cuh"
#include "kernels/moe_grouped.cuh"

namespace dsv3 {

void CudaBackend::GroupedFp8Experts(const TensorView& x, const TensorView& topk_ids,
                                    const TensorView& topk_weights,
                                    std::span<const ExpertWeights> experts, int64_t expert_begin,
                                    const ExpertWeights* shared, const TensorView& out,
                                    bool tiled) {
  const int64_t t = x.dim(0), h = x.dim(1), k = topk_ids.dim(1), routed = t * k;
  // The shared expert is local expert `experts.size()`, and each token's row for it is one more
  // entry (MoeAlign's shared_expert).
  const int64_t local = static_cast<int64_t>(experts.size()) + (shared != nullptr ? 1 : 0);
  const int64_t entries = routed + (shared != nullptr ? t : 0);
  const ExpertWeights& e0 = experts.front();
  const int64_t inter = e0.gate.n();
  const int64_t h_kpad = e0.gate.weight.strides[0], i_kpad = e0.down.weight.strides[0];
  constexpr int64_t kTile = kernels::kGroupedTileRows;
  // Tiled: each active expert adds at most one partial tile to the whole tiles of the rows.
  const int64_t tiles = tiled ? (entries + kTile - 1) / kTile + std::min(local, entries) : 0;
  // rows: of the routed layout (token_of, gate|up, expert outputs); rows_pad: of the quantized
  // operands (the small-M kernel reads rows in groups of 4).
  const int64_t rows = tiled ? tiles * kTile : entries;
  const int64_t rows_pad = tiled ? rows : (entries + 3) / 4 * 4;

  Tensor begin(allocator(), DType::kI32, {local + 1});
  Tensor active(allocator(), DType::kI32, {local});
  Tensor num_active(allocator(), DType::kI32, {1});
  Tensor token_of(allocator(), DType::kI32, {rows});   // [rows] token of each routed row
  Tensor row_of(allocator(), DType::kI32, {entries});  // [T * k (+ T)] row of each (t, j)
  kernels::MoeAlignParams align{topk_ids.ptr<int32_t>(),
                                routed,
                                k,
                                expert_begin,
                                local,
                                begin.ptr<int32_t>(),
                                active.ptr<int32_t>(),
                                num_active.ptr<int32_t>(),
                                token_of.ptr<int32_t>(),
                                row_of.ptr<int32_t>(),
                                ActiveLogSlot()};
  Tensor tile_expert, tiles_used;  // [tiles] expert of each tile, [1] tiles in use
  // The small-M kernel's chunks of 8 rows, where an expert may have more (a token's top-k
  // experts are distinct; the shared expert has one row per token).
  const bool chunked = !tiled && options_.grouped_chunks && t > kernels::kGroupedChunkRows;
  Tensor chunk_begin, chunk_expert, num_chunks;
  if (tiled) {
    tile_expert = Tensor(allocator(), DType::kI32, {tiles});
    tiles_used = Tensor(allocator(), DType::kI32, {1});
    align.tile_rows = kTile;
    align.tile_expert = tile_expert.ptr<int32_t>();
    align.num_tiles = tiles_used.ptr<int32_t>();
    align.capacity_rows = rows;
  } else if (chunked) {
    const int64_t max_chunks = kernels::MaxGroupedChunks(entries, local);
    chunk_begin = Tensor(allocator(), DType::kI32, {local + 1});
    chunk_expert = Tensor(allocator(), DType::kI32, {max_chunks});
    num_chunks = Tensor(allocator(), DType::kI32, {1});
    align.chunks = {chunk_begin.ptr<int32_t>(), chunk_expert.ptr<int32_t>(),
                    num_chunks.ptr<int32_t>(), max_chunks};
  }
  if (shared != nullptr) align.shared_expert = local - 1;
  // Steps of a few routed rows align and quantize them in one launch (below).
  const bool align_quantizes = !tiled && !chunked && options_.fuse_moe_align_quantize &&
                               rows_pad <= kAlignQuantizeMaxRows;
  if (!align_quantizes) kernels::MoeAlign(align, stream_);
  const int32_t* used = tiled ? tiles_used.ptr<int32_t>() : nullptr;

  // src [rows, cols] (row r of it: row x_rows[r] of src when set; silu(src) * up when up is set)
  // quantized into q [rows_pad, k_pad] e4m3 and s [k_pad / 128, rows_pad].
  auto quantize = [&](const void* src, int64_t src_stride, const int32_t* x_rows, const void* up,
                      int64_t cols, int64_t k_pad, const Tensor& q, const Tensor& s) {
    kernels::QuantizeActivationsParams p{src, src_stride, rows, cols, rows_pad, k_pad,
                                         q.ptr<uint8_t>(), s.ptr<float>(),
                                         options_.ue8m0_activation_scales};
    p.x_rows = x_rows;
    p.up = up;
    p.up_stride = src_stride;
    p.used_count = used;
    p.used_unit = kTile;
    kernels::QuantizeActivations(p, stream_);
  };
  const kernels::GroupedWeight* weights = GroupedWeights(experts, shared);
  // y [rows, mats * n] = the quantized rows times matrices [first, first + mats) of their
  // expert (weights [experts, 3]: gate, up, down); with h_q (tiled only), down's input from
  // gate|up instead (kernels::Fp8GroupedGemmParams::h_q; y unused).
  auto gemm = [&](const Tensor& q, const Tensor& s, int64_t k_pad, int64_t first, int64_t mats,
                  int64_t n, int64_t scale_stride, void* y, bool y_f32,
                  const Tensor* h_q = nullptr, const Tensor* h_s = nullptr) {
    if (tiled) {
      kernels::Fp8GroupedGemmParams p{q.ptr<uint8_t>(),
                                      s.ptr<float>(),
                                      rows_pad,
                                      k_pad,
                                      tile_expert.ptr<int32_t>(),
                                      tiles,
                                      weights,
                                      3,
                                      first,
                                      mats,
                                      n,
                                      scale_stride,
                                      y,
                                      mats * n,
                                      y_f32};
      p.tiles_used = used;
      if (h_q != nullptr) {
        p.h_q = h_q->ptr<uint8_t>();
        p.h_s = h_s->ptr<float>();
        p.h_k_pad = h_q->view().dim(1);
        p.h_ue8m0 = options_.ue8m0_activation_scales;
      }
      kernels::Fp8GroupedGemm(p, stream_);
    } else {
      // max_rows_per_group t: a token's top-k experts are distinct, and the shared expert takes
      // one row per token.
      kernels::GroupedFp8GemmParams p{q.ptr<uint8_t>(),
                                      s.ptr<float>(),
                                      rows_pad,
                                      k_pad,
                                      begin.ptr<int32_t>(),
                                      active.ptr<int32_t>(),
                                      num_active.ptr<int32_t>(),
                                      std::min(local, entries),
                                      weights,
                                      3,
                                      first,
                                      mats,
                                      n,
                                      scale_stride,
                                      y,
                                      mats * n,
                                      y_f32,
                                      t};
      p.chunks = align.chunks;  // empty when not chunked
      kernels::GroupedFp8Gemm(p, stream_);
    }
  };

  Tensor xq(allocator(), DType::kF8E4M3, {rows_pad, h_kpad});
  Tensor xs(allocator(), DType::kF32, {h_kpad / 128, rows_pad});
  if (tiled) {
    // Each token quantized once, then its codes copied to its routed rows: quantizing the routed
    // rows one by one read x top_k times (at V3's 4096 tokens x is 58 MB, more than L2 holds).
    Tensor tq(allocator(), DType::kF8E4M3, {t, h_kpad});  // [T, h_kpad]
    Tensor ts(allocator(), DType::kF32, {h_kpad / 128, t});
    kernels::QuantizeActivations({x.data, x.strides[0], t, h, t, h_kpad, tq.ptr<uint8_t>(),
                                  ts.ptr<float>(), options_.ue8m0_activation_scales},
                                 stream_);
    kernels::GatherQuantizedRowsParams gather{tq.ptr<uint8_t>(), ts.ptr<float>(), t,
                                              token_of.ptr<int32_t>(), rows, h_kpad,
                                              xq.ptr<uint8_t>(), xs.ptr<float>(), rows_pad};
    gather.used_count = used;
    gather.used_unit = kTile;
    kernels::GatherQuantizedRows(gather, stream_);
  } else if (align_quantizes) {
    kernels::MoeAlignQuantize(align,
                              {x.data, x.strides[0], rows, h, rows_pad, h_kpad, xq.ptr<uint8_t>(),
                               xs.ptr<float>(), options_.ue8m0_activation_scales},
                              stream_);
  } else {
    quantize(x.data, x.strides[0], token_of.ptr<int32_t>(), nullptr, h, h_kpad, xq, xs);
  }
  Tensor aq(allocator(), DType::kF8E4M3, {rows_pad, i_kpad});
  Tensor as(allocator(), DType::kF32, {i_kpad / 128, rows_pad});
  if (tiled && options_.swiglu_in_grouped_gemm) {
    gemm(xq, xs, h_kpad, 0, 2, inter, e0.gate.scale_inv.strides[0], nullptr, false, &aq, &as);
  } else {
    Tensor gate_up(allocator(), DType::kBF16, {rows, 2 * inter});  // [rows, gate | up]
    gemm(xq, xs, h_kpad, 0, 2, inter, e0.gate.scale_inv.strides[0], gate_up.view().data, false);
    const uint16_t* gu = gate_up.ptr<uint16_t>();
    quantize(gu, 2 * inter, nullptr, gu + inter, inter, i_kpad, aq, as);
  }
  // [rows, H] each row's expert output: BF16, as the experts' outputs are; F32 with a shared
  // expert and an F32 out, so that its rows stay unrounded as its MLP apart would leave them
  // (MoeCombine rounds the routed rows as it reads them).
  const bool y_f32 = shared != nullptr && out.dtype == DType::kF32;
  Tensor yp(allocator(), y_f32 ? DType::kF32 : DType::kBF16, {rows, h});
  gemm(aq, as, i_kpad, 2, 1, h, e0.down.scale_inv.strides[0], yp.view().data, y_f32);
  kernels::MoeCombineParams combine{yp.view().data,
                                    h,
                                    row_of.ptr<int32_t>(),
                                    topk_weights.ptr<float>(),
                                    topk_weights.strides[0],
                                    out.data,
                                    out.strides[0],
                                    t,
                                    k,
                                    h,
                                    ElemTypeOf(out.dtype)};
  if (shared != nullptr) combine.shared_row = row_of.ptr<int32_t>() + routed;
  combine.y_type = y_f32 ? kernels::ElemType::kF32 : kernels::ElemType::kBF16;
  kernels::MoeCombine(combine, stream_);
}

const kernels::GroupedWeight* CudaBackend::GroupedWeights(std::span<const ExpertWeights> experts,
                                                          const ExpertWeights* shared) {
  // Keyed by a weight only this table starts with: the shared expert's gate when it comes last
  // (no routed table starts with it), else the first expert's gate.
  const void* key = shared != nullptr ? shared->gate.weight.data : experts.front().gate.weight.data;
  auto it = grouped_weights_.find(key);
  if (it == grouped_weights_.end()) {
    std::vector<kernels::GroupedWeight> table;  // [experts (+ shared), 3]: gate, up, down
    auto add = [&](const ExpertWeights& e) {
      for (const LinearWeight* w : {&e.gate, &e.up, &e.down}) {
        table.push_back({w->weight.ptr<uint8_t>(), w->scale_inv.ptr<float>(), w->k_block_major});
      }
    };
    for (const ExpertWeights& e : experts) add(e);
    if (shared != nullptr) add(*shared);
    const int64_t bytes = static_cast<int64_t>(table.size() * sizeof(kernels::GroupedWeight));
    Tensor device_table = UploadBytes(table.data(), DType::kU8, {bytes});
    CountAsWeight(device_table);  // dropped with the first expert's gate weight
    it = grouped_weights_.emplace(key, std::move(device_table)).first;
  }
  return static_cast<const kernels::GroupedWeight*>(it->second.view().data);
}

}  // namespace dsv3
