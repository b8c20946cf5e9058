// ForwardingBackend: a Backend that passes every call to another one, the base of the wrappers
// that add one concern around a compute backend (TimingBackend: op timing; GpuEmulationBackend:
// the GPU's roundings on the CPU). A wrapper overrides only the calls its concern touches.
// The fused ops (LinearAdd, AddRmsNorm, RmsNormLinear, PrepareMlaInputs, MlaQueryAndInputs,
// MlaAttentionLinear) are not forwarded: their defaults run through the wrapper's own parts
// (Add, RmsNorm, Linear, Rope, WriteKvCache, MlaAttention), so a wrapper that changes those
// changes them too; a wrapper that only observes (TimingBackend) forwards them itself.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"

namespace dsv3 {

class ForwardingBackend : public Backend {
 public:
  // Forwards to `inner`, which must outlive this.
  explicit ForwardingBackend(Backend& inner) : inner_(&inner) {}
  // Forwards to `inner`, owned.
  explicit ForwardingBackend(std::unique_ptr<Backend> inner)
      : owned_(std::move(inner)), inner_(owned_.get()) {}

  Backend& inner() { return *inner_; }

  Device device() const override { return inner_->device(); }
  Allocator* allocator() override { return inner_->allocator(); }
  std::string name() const override { return inner_->name(); }
  DType activation_dtype() const override { return inner_->activation_dtype(); }
  DType kv_cache_dtype() const override { return inner_->kv_cache_dtype(); }
  void* device_stream() override { return inner_->device_stream(); }

  absl::StatusOr<LinearWeight> LoadLinear(const TensorSource& source, const std::string& prefix,
                                          int64_t n, int64_t k, const Slice2D& slice,
                                          std::vector<Tensor>& storage) override {
    return inner_->LoadLinear(source, prefix, n, k, slice, storage);
  }
  absl::StatusOr<TensorView> LoadDense(const TensorSource& source, const std::string& name,
                                       std::span<const int64_t> shape,
                                       std::vector<Tensor>& storage) override {
    return inner_->LoadDense(source, name, shape, storage);
  }
  Allocator* staging_allocator() override { return inner_->staging_allocator(); }
  absl::Status PrepareRoutedExperts(std::span<ExpertWeights> experts) override {
    return inner_->PrepareRoutedExperts(experts);
  }
  absl::StatusOr<LinearWeight> MakeLinear(const TensorView& weight, const TensorView& scale_inv,
                                          std::vector<Tensor>& storage) override {
    return inner_->MakeLinear(weight, scale_inv, storage);
  }
  Tensor Upload(const TensorView& host) override { return inner_->Upload(host); }
  void Download(const TensorView& device_tensor, float* host) override {
    inner_->Download(device_tensor, host);
  }
  void CopyToHost(const TensorView& src, void* host) override { inner_->CopyToHost(src, host); }
  void CopyFromHost(const void* host, const TensorView& dst) override {
    inner_->CopyFromHost(host, dst);
  }

  void BeginStep(const AttentionBatch& batch) override { inner_->BeginStep(batch); }
  void BeginLayer(int64_t layer) override { inner_->BeginLayer(layer); }
  void Synchronize() override { inner_->Synchronize(); }
  std::optional<DeviceMemory> MemoryInfo() override { return inner_->MemoryInfo(); }
  void ResetPeakMemory() override { inner_->ResetPeakMemory(); }
  void ReleaseCachedMemory() override { inner_->ReleaseCachedMemory(); }
  void SetGraphMemoryLimit(int64_t bytes) override { inner_->SetGraphMemoryLimit(bytes); }
  StepGraphCapture* step_graphs() override { return inner_->step_graphs(); }

  void Embedding(const TensorView& table, std::span<const int32_t> ids, int64_t first_row,
                 const TensorView& out) override {
    inner_->Embedding(table, ids, first_row, out);
  }
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps,
               const TensorView& out) override {
    inner_->RmsNorm(x, weight, eps, out);
  }
  void Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) override {
    inner_->Linear(x, w, y);
  }
  void Add(const TensorView& a, const TensorView& b, const TensorView& out) override {
    inner_->Add(a, b, out);
  }
  void Rope(const TensorView& x, std::span<const int32_t> positions,
            const RopeParams& rope) override {
    inner_->Rope(x, positions, rope);
  }
  void SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) override {
    inner_->SiluMul(gate, up, out);
  }
  void Copy(const TensorView& src, const TensorView& dst) override { inner_->Copy(src, dst); }
  void GatherRows(const TensorView& x, std::span<const int32_t> rows,
                  const TensorView& out) override {
    inner_->GatherRows(x, rows, out);
  }
  void ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                      const TensorView& out) override {
    inner_->ScatterSumRows(x, index, out);
  }
  void PadRows(const TensorView& x, float fill, const TensorView& out) override {
    inner_->PadRows(x, fill, out);
  }
  void SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) override {
    inner_->SumRowBlocks(x, blocks, out);
  }
  void WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                    const TensorView& cache) override {
    inner_->WriteKvCache(latent, batch, cache);
  }
  void MlaAttention(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                    const AttentionBatch& batch, const MlaParams& params,
                    const TensorView& out) override {
    inner_->MlaAttention(q, cache, kv_b, batch, params, out);
  }
  void MoeRoute(const TensorView& x, const TensorView& router, const TensorView& bias,
                const MoeRouteParams& params, const TensorView& topk_ids,
                const TensorView& topk_weights) override {
    inner_->MoeRoute(x, router, bias, params, topk_ids, topk_weights);
  }
  void MoeExperts(const TensorView& x, const TensorView& topk_ids, const TensorView& topk_weights,
                  std::span<const ExpertWeights> experts, int64_t expert_begin,
                  const TensorView& out) override {
    inner_->MoeExperts(x, topk_ids, topk_weights, experts, expert_begin, out);
  }
  bool MoeExpertsWithShared(const TensorView& x, const TensorView& topk_ids,
                            const TensorView& topk_weights, std::span<const ExpertWeights> experts,
                            int64_t expert_begin, const ExpertWeights& shared,
                            const TensorView& out) override {
    return inner_->MoeExpertsWithShared(x, topk_ids, topk_weights, experts, expert_begin, shared,
                                        out);
  }

 private:
  std::unique_ptr<Backend> owned_;  // null when forwarding to a backend owned elsewhere
  Backend* inner_;
};

}  // namespace dsv3
