// MoE experts of large batches (prefill) on the GPU: the routed rows of every local expert in
// tiles of kernels::kGroupedTileRows rows that belong to one expert each (layout built on the
// host from the router's ids, engine/backend/moe_tile_layout.h), then two grouped FP8 GEMM
// launches over all tiles (kernels/fp8_grouped_gemm.cu): gate|up side by side, and down. One
// launch per phase instead of a cuBLASLt chain per expert: at ~128 rows per expert the
// per-expert calls were host-enqueue bound (768 calls per layer at V3 sizes).
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/moe_tile_layout.h"
#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/fp8_quant.cuh"
#include "kernels/moe.cuh"

namespace dsv3 {

void CudaBackend::TiledFp8Experts(const TensorView& x, std::span<const int32_t> ids,
                                  const TensorView& topk_weights,
                                  std::span<const ExpertWeights> experts, int64_t expert_begin,
                                  const TensorView& out) {
  const int64_t t = x.dim(0), h = x.dim(1), k = topk_weights.dim(1);
  const int64_t local = static_cast<int64_t>(experts.size());
  const ExpertWeights& e0 = experts.front();
  const int64_t inter = e0.gate.n();
  const int64_t h_kpad = e0.gate.weight.strides[0], i_kpad = e0.down.weight.strides[0];
  const MoeTileLayout layout =
      BuildMoeTileLayout(ids, k, expert_begin, local, kernels::kGroupedTileRows);
  active_experts_.push_back(layout.active_experts);
  const int64_t rows = layout.rows_padded, tiles = static_cast<int64_t>(layout.tile_expert.size());
  Tensor row_of = UploadBytes(layout.row_of.data(), DType::kI32, {t * k});
  if (tiles == 0) {  // no token routed to this rank's experts: MoeCombine writes zeros
    kernels::MoeCombine({nullptr, h, row_of.ptr<int32_t>(), topk_weights.ptr<float>(),
                         topk_weights.strides[0], out.data, out.strides[0], t, k, h,
                         ElemTypeOf(out.dtype)},
                        stream_);
    return;
  }
  Tensor token_of = UploadBytes(layout.token_of.data(), DType::kI32, {rows});
  Tensor tile_expert = UploadBytes(layout.tile_expert.data(), DType::kI32, {tiles});

  // The routed copies of x in tile order, quantized (the gather fused into the quantization):
  // xq [rows, H_kpad] e4m3, xs [H_kpad / 128, rows].
  Tensor xq(allocator(), DType::kF8E4M3, {rows, h_kpad});
  Tensor xs(allocator(), DType::kF32, {h_kpad / 128, rows});
  kernels::QuantizeActivationsParams quantize_x{x.data, x.strides[0], rows, h, rows, h_kpad,
                                                xq.ptr<uint8_t>(), xs.ptr<float>(),
                                                options_.ue8m0_activation_scales};
  quantize_x.x_rows = token_of.ptr<int32_t>();
  kernels::QuantizeActivations(quantize_x, stream_);
  const kernels::GroupedWeight* weights = GroupedWeights(experts);
  // gate | up [rows, 2I], then silu(gate) * up quantized in one pass: aq [rows, I_kpad] e4m3,
  // as [I_kpad / 128, rows].
  Tensor aq(allocator(), DType::kF8E4M3, {rows, i_kpad});
  Tensor as(allocator(), DType::kF32, {i_kpad / 128, rows});
  {
    Tensor gate_up(allocator(), DType::kBF16, {rows, 2 * inter});
    kernels::Fp8GroupedGemm({xq.ptr<uint8_t>(), xs.ptr<float>(), rows, h_kpad,
                             tile_expert.ptr<int32_t>(), tiles, weights, 3, 0, 2, inter,
                             e0.gate.scale_inv.strides[0], gate_up.view().data, 2 * inter,
                             false},
                            stream_);
    const uint16_t* gu = gate_up.ptr<uint16_t>();
    kernels::QuantizeActivationsParams quantize_act{gu, 2 * inter, rows, inter, rows, i_kpad,
                                                    aq.ptr<uint8_t>(), as.ptr<float>(),
                                                    options_.ue8m0_activation_scales};
    quantize_act.up = gu + inter;
    quantize_act.up_stride = 2 * inter;
    kernels::QuantizeActivations(quantize_act, stream_);
  }
  Tensor yp(allocator(), DType::kBF16, {rows, h});  // [rows, H] each row's expert output
  kernels::Fp8GroupedGemm({aq.ptr<uint8_t>(), as.ptr<float>(), rows, i_kpad,
                           tile_expert.ptr<int32_t>(), tiles, weights, 3, 2, 1, h,
                           e0.down.scale_inv.strides[0], yp.view().data, h, false},
                          stream_);
  kernels::MoeCombine({yp.view().data, h, row_of.ptr<int32_t>(), topk_weights.ptr<float>(),
                       topk_weights.strides[0], out.data, out.strides[0], t, k, h,
                       ElemTypeOf(out.dtype)},
                      stream_);
}

}  // namespace dsv3
