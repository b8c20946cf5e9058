// MoE experts of large batches (prefill) on the GPU: the routed rows of every local expert in
// tiles of kernels::kGroupedTileRows rows that belong to one expert each, laid out on the device
// (MoeAlign with tiles, sized for the most tiles the batch could need, the count in use read by
// the GEMM kernel), then two grouped FP8 GEMM launches over the tiles (kernels/fp8_grouped_gemm.cu):
// gate|up side by side, and down. No host synchronization: one launch per phase instead of a
// cuBLASLt chain per expert, which was host-enqueue bound (768 calls per layer at V3 sizes), and
// no idle device while the host reads the router's choices.
#include <algorithm>

#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/moe.cuh"
#include "kernels/moe_grouped.cuh"

namespace dsv3 {

void CudaBackend::TiledFp8Experts(const TensorView& x, const TensorView& topk_ids,
                                  const TensorView& topk_weights,
                                  std::span<const ExpertWeights> experts, int64_t expert_begin,
                                  const TensorView& out) {
  const int64_t t = x.dim(0), h = x.dim(1), k = topk_ids.dim(1), entries = t * k;
  const int64_t local = static_cast<int64_t>(experts.size());
  const ExpertWeights& e0 = experts.front();
  const int64_t inter = e0.gate.n();
  const int64_t h_kpad = e0.gate.weight.strides[0], i_kpad = e0.down.weight.strides[0];
  // Each active expert adds at most one partial tile to the whole tiles of the routed rows.
  const int64_t tiles = (entries + kernels::kGroupedTileRows - 1) / kernels::kGroupedTileRows +
                        std::min(local, entries);
  const int64_t rows = tiles * kernels::kGroupedTileRows;

  Tensor begin(allocator(), DType::kI32, {local + 1});
  Tensor active(allocator(), DType::kI32, {local});
  Tensor num_active(allocator(), DType::kI32, {1});
  Tensor token_of(allocator(), DType::kI32, {rows});   // [rows] token of each tile row
  Tensor row_of(allocator(), DType::kI32, {entries});  // [T * k] tile row of each (t, j)
  Tensor tile_expert(allocator(), DType::kI32, {tiles});
  Tensor tiles_used(allocator(), DType::kI32, {1});
  kernels::MoeAlignParams align{topk_ids.ptr<int32_t>(), entries, k, expert_begin, local,
                                begin.ptr<int32_t>(), active.ptr<int32_t>(),
                                num_active.ptr<int32_t>(), token_of.ptr<int32_t>(),
                                row_of.ptr<int32_t>(), ActiveLogSlot()};
  align.tile_rows = kernels::kGroupedTileRows;
  align.tile_expert = tile_expert.ptr<int32_t>();
  align.num_tiles = tiles_used.ptr<int32_t>();
  align.capacity_rows = rows;
  kernels::MoeAlign(align, stream_);

  // The routed copies of x in tile order, quantized (the gather fused into the quantization):
  // xq [rows, H_kpad] e4m3, xs [H_kpad / 128, rows]. Rows of tiles past the count in use are
  // neither read nor used.
  Tensor xq(allocator(), DType::kF8E4M3, {rows, h_kpad});
  Tensor xs(allocator(), DType::kF32, {h_kpad / 128, rows});
  kernels::QuantizeActivationsParams quantize_x{x.data, x.strides[0], rows, h, rows, h_kpad,
                                                xq.ptr<uint8_t>(), xs.ptr<float>(),
                                                options_.ue8m0_activation_scales};
  quantize_x.x_rows = token_of.ptr<int32_t>();
  quantize_x.used_count = tiles_used.ptr<int32_t>();
  quantize_x.used_unit = kernels::kGroupedTileRows;
  kernels::QuantizeActivations(quantize_x, stream_);
  const kernels::GroupedWeight* weights = GroupedWeights(experts);
  // gate | up [rows, 2I], then silu(gate) * up quantized in one pass: aq [rows, I_kpad] e4m3,
  // as [I_kpad / 128, rows].
  Tensor aq(allocator(), DType::kF8E4M3, {rows, i_kpad});
  Tensor as(allocator(), DType::kF32, {i_kpad / 128, rows});
  {
    Tensor gate_up(allocator(), DType::kBF16, {rows, 2 * inter});
    kernels::Fp8GroupedGemmParams gemm{xq.ptr<uint8_t>(), xs.ptr<float>(), rows, h_kpad,
                                       tile_expert.ptr<int32_t>(), tiles, weights, 3, 0, 2,
                                       inter, e0.gate.scale_inv.strides[0],
                                       gate_up.view().data, 2 * inter, false};
    gemm.tiles_used = tiles_used.ptr<int32_t>();
    kernels::Fp8GroupedGemm(gemm, stream_);
    const uint16_t* gu = gate_up.ptr<uint16_t>();
    kernels::QuantizeActivationsParams quantize_act{gu, 2 * inter, rows, inter, rows, i_kpad,
                                                    aq.ptr<uint8_t>(), as.ptr<float>(),
                                                    options_.ue8m0_activation_scales};
    quantize_act.up = gu + inter;
    quantize_act.up_stride = 2 * inter;
    quantize_act.used_count = tiles_used.ptr<int32_t>();
    quantize_act.used_unit = kernels::kGroupedTileRows;
    kernels::QuantizeActivations(quantize_act, stream_);
  }
  Tensor yp(allocator(), DType::kBF16, {rows, h});  // [rows, H] each row's expert output
  kernels::Fp8GroupedGemmParams gemm{aq.ptr<uint8_t>(), as.ptr<float>(), rows, i_kpad,
                                     tile_expert.ptr<int32_t>(), tiles, weights, 3, 2, 1, h,
                                     e0.down.scale_inv.strides[0], yp.view().data, h, false};
  gemm.tiles_used = tiles_used.ptr<int32_t>();
  kernels::Fp8GroupedGemm(gemm, stream_);
  kernels::MoeCombine({yp.view().data, h, row_of.ptr<int32_t>(), topk_weights.ptr<float>(),
                       topk_weights.strides[0], out.data, out.strides[0], t, k, h,
                       ElemTypeOf(out.dtype)},
                      stream_);
}

}  // namespace dsv3
