// MoE on the GPU: noaux_tc routing (decode-sized steps: one kernel, the router GEMV whose last
// block selects; larger: router GEMM, then a top-k kernel) and the routed experts.
// FP8 experts run as grouped GEMMs with no host synchronization (cuda_moe_grouped.cc): the
// small-M kernel up to grouped_moe_max_tokens_ tokens, the tiled wgmma kernel beyond. BF16
// experts read the router's ids back and run one after another through Linear. All end in one
// weighted combine.
#include <algorithm>
#include <unordered_set>

#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/elementwise.cuh"
#include "kernels/launch_check.h"
#include "kernels/moe.cuh"
#include "kernels/weight_layout.cuh"

namespace dsv3 {

namespace {

constexpr int64_t kMaxGroupedExperts = 1024;  // MoeAlign's shared counters

// Whether MoeExperts runs `experts` through the grouped kernels (which read k-block-major codes)
// rather than one expert after another through Linear (row-major): FP8 and at most
// kMaxGroupedExperts of them. A layer's local experts that fit give spans that fit too.
bool GroupedKernelsTake(std::span<const ExpertWeights> experts) {
  return !experts.empty() && experts.front().gate.weight.dtype == DType::kF8E4M3 &&
         static_cast<int64_t>(experts.size()) <= kMaxGroupedExperts;
}

}  // namespace

void CudaBackend::MoeRoute(const TensorView& x, const TensorView& router, const TensorView& bias,
                           const MoeRouteParams& p, const TensorView& topk_ids,
                           const TensorView& topk_weights) {
  assert(router.dtype == DType::kBF16 && bias.dtype == DType::kF32 && p.num_experts <= 1024);
  const int64_t t = x.dim(0), e = p.num_experts, h = x.dim(1);
  if (t == 0) return;
  kernels::MoeTopkParams topk{.logits = nullptr,  // the GEMM path's
                              .bias = bias.ptr<float>(),
                              .tokens = t,
                              .experts = e,
                              .top_k = p.top_k,
                              .groups = p.num_groups,
                              .topk_groups = p.topk_groups,
                              .norm_topk_prob = p.norm_topk_prob,
                              .scaling = p.routed_scaling_factor,
                              .ids = topk_ids.ptr<int32_t>(),
                              .ids_stride = topk_ids.strides[0],
                              .weights = topk_weights.ptr<float>(),
                              .weights_stride = topk_weights.strides[0]};
  kernels::MoeRouterTopkParams fused{.x = x.data,
                                     .x_stride = x.strides[0],
                                     .router = router.data,
                                     .router_stride = router.strides[0],
                                     .hidden = h,
                                     .splits = kernels::MoeRouterSplits(e, h, multiprocessors_),
                                     .partials = nullptr,  // allocated if it is taken
                                     .ticket = router_ticket_.ptr<uint32_t>(),
                                     .topk = topk};
  if (x.dtype == DType::kBF16 && x.strides[1] == 1 && router.strides[1] == 1 &&
      kernels::MoeRouterTopkFits(fused)) {
    Section path(*this, "- moe route: fused router kernel");
    Tensor partials(allocator(), DType::kF32, {fused.splits, t, e});  // [splits, T, E]
    fused.partials = partials.ptr<float>();
    kernels::MoeRouterTopk(fused, stream_);
    return;
  }
  Section path(*this, "- moe route: GEMM + top-k");
  Tensor logits(allocator(), DType::kF32, {t, e});  // [T, E]
  Bf16Linear(x, router, logits);
  topk.logits = logits.ptr<float>();
  kernels::MoeTopk(topk, stream_);
}

absl::Status CudaBackend::PrepareRoutedExperts(std::span<ExpertWeights> experts) {
  if (!GroupedKernelsTake(experts)) return absl::OkStatus();
  Tensor scratch;  // [rows, k_pad] of the largest matrix so far
  std::unordered_set<const void*> done;  // a matrix two experts share moves once
  for (ExpertWeights& e : experts) {
    for (LinearWeight* w : {&e.gate, &e.up, &e.down}) {
      if (w->weight.dtype != DType::kF8E4M3 || w->k_block_major) {
        return absl::InvalidArgumentError(
            "PrepareRoutedExperts: every routed expert must be FP8 and laid out once");
      }
      if (done.insert(w->weight.data).second) {
        const int64_t k_pad = w->weight.strides[0];
        const int64_t bytes = kernels::WeightRowsPadded(w->n()) * k_pad;
        if (scratch.numel() < bytes) scratch = Tensor(allocator(), DType::kU8, {bytes});
        kernels::ToKBlockMajor(w->weight.ptr<uint8_t>(), w->n(), k_pad, scratch.ptr<uint8_t>(),
                               stream_);
        DSV3_CUDA_CHECK(cudaMemcpyAsync(w->weight.data, scratch.view().data, bytes,
                                        cudaMemcpyDeviceToDevice, stream_));
      }
      w->k_block_major = true;
    }
  }
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));  // scratch goes back to the pool
  return absl::OkStatus();
}

bool CudaBackend::MoeExpertsWithShared(const TensorView& x, const TensorView& topk_ids,
                                       const TensorView& topk_weights,
                                       std::span<const ExpertWeights> experts, int64_t expert_begin,
                                       const ExpertWeights& shared, const TensorView& out) {
  const int64_t t = x.dim(0), local = static_cast<int64_t>(experts.size());
  const ExpertWeights& e0 = experts.front();
  // The grouped kernels read every expert's matrices with the first one's shape and strides.
  auto same_layout = [](const LinearWeight& a, const LinearWeight& b) {
    return a.weight.dtype == b.weight.dtype && a.n() == b.n() && a.k() == b.k() &&
           a.weight.strides[0] == b.weight.strides[0] &&
           a.scale_inv.strides[0] == b.scale_inv.strides[0];
  };
  if (!options_.fuse_shared_expert || t > kFuseSharedMaxTokens || t > grouped_moe_max_tokens_) {
    return false;  // only decode-sized steps take it (kFuseSharedMaxTokens)
  }
  if (t == 0 || e0.gate.weight.dtype != DType::kF8E4M3 || local + 1 > kMaxGroupedExperts ||
      !same_layout(shared.gate, e0.gate) || !same_layout(shared.up, e0.up) ||
      !same_layout(shared.down, e0.down)) {
    return false;
  }
  assert(topk_ids.is_contiguous() && topk_weights.dtype == DType::kF32);
  Section path(*this, "- moe experts + shared: small-M grouped kernel");
  GroupedFp8Experts(x, topk_ids, topk_weights, experts, expert_begin, &shared, out,
                    /*tiled=*/false);
  return true;
}

void CudaBackend::MoeExperts(const TensorView& x, const TensorView& topk_ids,
                             const TensorView& topk_weights,
                             std::span<const ExpertWeights> experts, int64_t expert_begin,
                             const TensorView& out) {
  const int64_t t = x.dim(0), h = x.dim(1), k = topk_ids.dim(1);
  const int64_t local = static_cast<int64_t>(experts.size());
  if (t == 0) return;
  assert(topk_ids.is_contiguous() && topk_weights.dtype == DType::kF32);
  if (GroupedKernelsTake(experts)) {
    const bool tiled = t > grouped_moe_max_tokens_;
    Section path(*this, tiled ? "- moe experts: tiled grouped GEMMs"
                              : "- moe experts: small-M grouped kernel");
    GroupedFp8Experts(x, topk_ids, topk_weights, experts, expert_begin, nullptr, out, tiled);
    return;
  }
  Section path(*this, "- moe experts: per expert");
  NoteHostWork("the per-expert MoE path's host permutation");
  std::vector<int32_t> ids(t * k);
  DSV3_CUDA_CHECK(cudaMemcpyAsync(ids.data(), topk_ids.data, ids.size() * 4,
                                  cudaMemcpyDeviceToHost, stream_));
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
  // Permuted order: expert by expert, tokens in order within an expert.
  std::vector<int64_t> begin(local + 1, 0);
  for (int32_t id : ids) {
    const int64_t e = id - expert_begin;
    if (e >= 0 && e < local) ++begin[e + 1];
  }
  active_experts_.push_back(std::count_if(begin.begin() + 1, begin.end(),
                                          [](int64_t n) { return n > 0; }));
  for (int64_t e = 0; e < local; ++e) begin[e + 1] += begin[e];
  const int64_t rows = begin[local];
  std::vector<int32_t> token_of(rows), row_of(t * k, -1);
  std::vector<int64_t> fill(begin.begin(), begin.end() - 1);
  for (int64_t i = 0; i < t * k; ++i) {
    const int64_t e = ids[i] - expert_begin;
    if (e < 0 || e >= local) continue;
    token_of[fill[e]] = static_cast<int32_t>(i / k);
    row_of[i] = static_cast<int32_t>(fill[e]++);
  }
  Tensor d_token_of = UploadBytes(token_of.data(), DType::kI32, {rows});
  Tensor xp(allocator(), DType::kBF16, {rows, h});  // [rows, H] routed copies of x
  kernels::GatherRows({x.data, x.strides[0], d_token_of.ptr<int32_t>(), xp.view().data, h, rows,
                       h, kernels::ElemType::kBF16},
                      stream_);
  // BF16 experts: one expert after another through Linear.
  Tensor d_row_of = UploadBytes(row_of.data(), DType::kI32, {t * k});
  Tensor yp(allocator(), DType::kBF16, {rows, h});  // [rows, H] expert outputs
  for (int64_t e = 0; e < local; ++e) {
    const int64_t r0 = begin[e], r1 = begin[e + 1];
    if (r0 == r1) continue;
    const int64_t inter = experts[e].gate.n();
    Tensor gate(allocator(), DType::kBF16, {r1 - r0, inter});  // [n, I]
    Tensor up(allocator(), DType::kBF16, {r1 - r0, inter});    // [n, I]
    const TensorView xe = xp.view().Rows(r0, r1);
    Linear(xe, experts[e].gate, gate);
    Linear(xe, experts[e].up, up);
    SiluMul(gate, up, gate);
    Linear(gate, experts[e].down, yp.view().Rows(r0, r1));
  }
  kernels::MoeCombine({yp.view().data, h, d_row_of.ptr<int32_t>(), topk_weights.ptr<float>(),
                       topk_weights.strides[0], out.data, out.strides[0], t, k, h,
                       ElemTypeOf(out.dtype)},
                      stream_);
}

int32_t* CudaBackend::ActiveLogSlot() {
  if (active_log_.view().data == nullptr) {
    active_log_ = Tensor(allocator_.get(), DType::kI32, {kActiveLogSize});
  }
  // (A captured graph would write the same log entry at every replay: graphs do not log.)
  return !capturing_ && active_logged_ < kActiveLogSize
             ? active_log_.ptr<int32_t>() + active_logged_++
             : nullptr;
}

std::vector<int64_t> CudaBackend::TakeActiveExperts() {
  std::vector<int64_t> all = std::exchange(active_experts_, {});
  if (active_logged_ > 0) {
    std::vector<int32_t> logged(active_logged_);
    DSV3_CUDA_CHECK(cudaMemcpyAsync(logged.data(), active_log_.view().data, active_logged_ * 4,
                                    cudaMemcpyDeviceToHost, stream_));
    DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
    all.insert(all.end(), logged.begin(), logged.end());
    active_logged_ = 0;
  }
  return all;
}

}  // namespace dsv3
