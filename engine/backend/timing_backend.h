// TimingBackend: a decorator that times the ops of the backend it wraps (dsv3-bench), per layer
// and per op name, on a WorkClock of that backend (CUDA events on its stream, or the host
// clock). Nothing is timed while both timings are off, and then every call passes straight
// through, CUDA graphs included.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend/forwarding_backend.h"
#include "engine/backend/step_graph_capture.h"
#include "engine/backend/timing_hooks.h"

namespace dsv3 {

class TimingBackend final : public ForwardingBackend, public OpSections {
 public:
  using ClockFactory = std::function<std::unique_ptr<WorkClock>()>;
  // `make_clock` makes the clocks of `inner`'s work queue (one for layers, one for ops). To time
  // the sections of an op as well, hand this to the inner backend as its OpSections.
  TimingBackend(Backend& inner, const ClockFactory& make_clock);
  ~TimingBackend() override;

  // Layer timing: while on, BeginLayer marks the clock. LayerTimes() waits and returns, per
  // BeginLayer call since the last take, the layer id and the milliseconds from its mark to the
  // next (the last one runs to the call itself).
  void SetLayerTiming(bool on) { layer_timing_ = on; }
  std::vector<std::pair<int64_t, float>> LayerTimes();
  // Op timing: while on, every op and every section the inner backend reports is timed, and
  // steps run eagerly (step_graphs() is null: a replayed graph has no ops to time). TakeOpTimes() waits and
  // returns the milliseconds per name since the last take, in the order the names were first
  // seen. Op names: "linear fp8", "linear bf16" (by the weight's type), "mla attention", ...; sections start with "- ".
  void SetOpTiming(bool on) { op_timing_ = on; }
  std::vector<std::pair<std::string, float>> TakeOpTimes();

  void BeginSection(const char* name) override;
  void EndSection() override;

  void BeginLayer(int64_t layer) override;
  // None while op timing is on: a replayed graph has no ops to time. While layer timing is on,
  // the inner backend's, wrapped so that a replayed step reports the layer marks its capture
  // recorded (the clock's marks inside a graph run with it).
  StepGraphCapture* step_graphs() override;

  void Embedding(const TensorView& table, std::span<const int32_t> ids, int64_t first_row,
                 const TensorView& out) override;
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps,
               const TensorView& out) override;
  void Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) override;
  void LinearAdd(const TensorView& x, const LinearWeight& w, const TensorView& y) override;
  void Add(const TensorView& a, const TensorView& b, const TensorView& out) override;
  void AddRmsNorm(const TensorView& x, const TensorView& branch, const TensorView& weight,
                  float eps, const TensorView& out) override;
  void RmsNormLinear(const TensorView& x, const TensorView* branch, const TensorView& norm_weight,
                     float eps, const TensorView& normed, const LinearWeight& w,
                     const TensorView& y) override;
  void PrepareMlaInputs(const MlaInputs& in, const TensorView& norm_weight, float eps,
                        std::span<const int32_t> positions, const RopeParams& rope,
                        const AttentionBatch& batch, const TensorView& cache) override;
  void MlaQueryAndInputs(const MlaQueryArgs& a, std::span<const int32_t> positions,
                         const RopeParams& rope, const AttentionBatch& batch,
                         const TensorView& cache) override;
  void Rope(const TensorView& x, std::span<const int32_t> positions,
            const RopeParams& rope) override;
  void SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) override;
  void Copy(const TensorView& src, const TensorView& dst) override;
  void GatherRows(const TensorView& x, std::span<const int32_t> rows,
                  const TensorView& out) override;
  void ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                      const TensorView& out) override;
  void PadRows(const TensorView& x, float fill, const TensorView& out) override;
  void SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) override;
  void WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                    const TensorView& cache) override;
  void MlaAttention(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                    const AttentionBatch& batch, const MlaParams& params,
                    const TensorView& out) override;
  void MlaAttentionLinear(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                          const AttentionBatch& batch, const MlaParams& params,
                          const TensorView& attn, const LinearWeight& o_proj,
                          const TensorView& out) override;
  void MoeRoute(const TensorView& x, const TensorView& router, const TensorView& bias,
                const MoeRouteParams& params, const TensorView& topk_ids,
                const TensorView& topk_weights) override;
  void MoeExperts(const TensorView& x, const TensorView& topk_ids, const TensorView& topk_weights,
                  std::span<const ExpertWeights> experts, int64_t expert_begin,
                  const TensorView& out) override;
  bool MoeExpertsWithShared(const TensorView& x, const TensorView& topk_ids,
                            const TensorView& topk_weights, std::span<const ExpertWeights> experts,
                            int64_t expert_begin, const ExpertWeights& shared,
                            const TensorView& out) override;

 private:
  class LayerMarkedGraphs;
  // Runs `op` between two op-clock marks recorded under `name` (just runs it while op timing
  // is off).
  template <typename Op>
  void Timed(const char* name, const Op& op);

  struct Interval {
    const char* name;
    int64_t start, end;
  };
  std::unique_ptr<WorkClock> layer_clock_, op_clock_;
  bool layer_timing_ = false, op_timing_ = false;
  std::vector<std::pair<int64_t, int64_t>> layer_marks_;  // (layer, mark)
  std::unique_ptr<LayerMarkedGraphs> marked_graphs_;     // made at the first use
  std::vector<Interval> op_intervals_;
  // Open sections, innermost last: name and start mark (-1: opened while op timing was off).
  std::vector<std::pair<const char*, int64_t>> open_sections_;
};

}  // namespace dsv3
