#include "engine/backend/timing_backend.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <map>

namespace dsv3 {

namespace {

class HostWorkClock final : public WorkClock {
 public:
  int64_t Mark() override {
    marks_.push_back(std::chrono::steady_clock::now());
    return static_cast<int64_t>(marks_.size()) - 1;
  }
  float ElapsedMs(int64_t from, int64_t to) override {
    return std::chrono::duration<float, std::milli>(marks_[to] - marks_[from]).count();
  }
  void Reset() override { marks_.clear(); }

 private:
  std::vector<std::chrono::steady_clock::time_point> marks_;
};

}  // namespace

std::unique_ptr<WorkClock> MakeHostWorkClock() { return std::make_unique<HostWorkClock>(); }

// The inner backend's graphs, keeping the layer marks each capture made (BeginLayer runs only
// while a step is captured, not when it is replayed) and handing them back at each replay.
class TimingBackend::LayerMarkedGraphs final : public StepGraphCapture {
 public:
  LayerMarkedGraphs(TimingBackend& owner, StepGraphCapture& inner)
      : owner_(owner), inner_(inner) {}
  void BeginMeasuredRun() override { inner_.BeginMeasuredRun(); }
  Measure EndMeasuredRun() override { return inner_.EndMeasuredRun(); }
  absl::StatusOr<GraphId> Capture(int64_t temporaries_bytes,
                                  absl::FunctionRef<absl::Status()> body) override {
    owner_.layer_marks_.clear();
    absl::StatusOr<GraphId> id = inner_.Capture(temporaries_bytes, body);
    if (id.ok()) marks_[*id] = owner_.layer_marks_;
    owner_.layer_marks_.clear();  // nothing ran
    return id;
  }
  void Launch(GraphId id, absl::FunctionRef<absl::Status()> body) override {
    inner_.Launch(id, body);
    if (auto it = marks_.find(id); it != marks_.end()) owner_.layer_marks_ = it->second;
  }
  void DropAll() override {
    marks_.clear();
    inner_.DropAll();
  }
  int64_t memory_bytes() const override { return inner_.memory_bytes(); }
  uint64_t plan_epoch() const override { return inner_.plan_epoch(); }
  bool DecodeReadsOwnKeysOnly(int64_t kv_lora_rank, int64_t rope_dim) const override {
    return inner_.DecodeReadsOwnKeysOnly(kv_lora_rank, rope_dim);
  }
  StepGraphCapture& inner() { return inner_; }

 private:
  TimingBackend& owner_;
  StepGraphCapture& inner_;
  std::map<GraphId, std::vector<std::pair<int64_t, int64_t>>> marks_;
};

TimingBackend::TimingBackend(Backend& inner, const ClockFactory& make_clock)
    : ForwardingBackend(inner), layer_clock_(make_clock()), op_clock_(make_clock()) {}

TimingBackend::~TimingBackend() = default;

StepGraphCapture* TimingBackend::step_graphs() {
  if (op_timing_) return nullptr;
  StepGraphCapture* graphs = inner().step_graphs();
  if (graphs == nullptr || !layer_timing_) return graphs;
  if (marked_graphs_ == nullptr || &marked_graphs_->inner() != graphs) {
    marked_graphs_ = std::make_unique<LayerMarkedGraphs>(*this, *graphs);
  }
  return marked_graphs_.get();
}

std::vector<std::pair<int64_t, float>> TimingBackend::LayerTimes() {
  std::vector<std::pair<int64_t, float>> times;
  if (layer_marks_.empty()) return times;
  const int64_t end = layer_clock_->Mark();
  for (size_t i = 0; i < layer_marks_.size(); ++i) {
    const int64_t next = i + 1 < layer_marks_.size() ? layer_marks_[i + 1].second : end;
    times.emplace_back(layer_marks_[i].first, layer_clock_->ElapsedMs(layer_marks_[i].second, next));
  }
  layer_marks_.clear();
  layer_clock_->Reset();
  return times;
}

std::vector<std::pair<std::string, float>> TimingBackend::TakeOpTimes() {
  std::vector<std::pair<std::string, float>> totals;
  for (const Interval& i : op_intervals_) {
    const float ms = op_clock_->ElapsedMs(i.start, i.end);
    auto it = std::find_if(totals.begin(), totals.end(),
                           [&](const auto& t) { return t.first == i.name; });
    if (it == totals.end()) {
      totals.emplace_back(i.name, ms);
    } else {
      it->second += ms;
    }
  }
  op_intervals_.clear();
  op_clock_->Reset();
  return totals;
}

void TimingBackend::BeginSection(const char* name) {
  open_sections_.emplace_back(name, op_timing_ ? op_clock_->Mark() : -1);
}

void TimingBackend::EndSection() {
  assert(!open_sections_.empty());
  const auto [name, start] = open_sections_.back();
  open_sections_.pop_back();
  if (start >= 0 && op_timing_) op_intervals_.push_back({name, start, op_clock_->Mark()});
}

template <typename Op>
void TimingBackend::Timed(const char* name, const Op& op) {
  if (!op_timing_) return op();
  const int64_t start = op_clock_->Mark();
  op();
  op_intervals_.push_back({name, start, op_clock_->Mark()});
}

void TimingBackend::BeginLayer(int64_t layer) {
  if (layer_timing_) layer_marks_.emplace_back(layer, layer_clock_->Mark());
  inner().BeginLayer(layer);
}

void TimingBackend::Embedding(const TensorView& table, std::span<const int32_t> ids,
                              int64_t first_row, const TensorView& out) {
  Timed("embedding", [&] { inner().Embedding(table, ids, first_row, out); });
}

void TimingBackend::RmsNorm(const TensorView& x, const TensorView& weight, float eps,
                            const TensorView& out) {
  Timed("rmsnorm", [&] { inner().RmsNorm(x, weight, eps, out); });
}

void TimingBackend::Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) {
  const char* name = w.weight.dtype == DType::kF8E4M3 ? "linear fp8"
                     : w.weight.dtype == DType::kBF16  ? "linear bf16"
                                                       : "linear f32";
  Timed(name, [&] { inner().Linear(x, w, y); });
}

void TimingBackend::LinearAdd(const TensorView& x, const LinearWeight& w, const TensorView& y) {
  Timed(w.weight.dtype == DType::kF8E4M3 ? "linear add fp8" : "linear add",
        [&] { inner().LinearAdd(x, w, y); });
}

void TimingBackend::Add(const TensorView& a, const TensorView& b, const TensorView& out) {
  Timed("add", [&] { inner().Add(a, b, out); });
}

void TimingBackend::AddRmsNorm(const TensorView& x, const TensorView& branch,
                               const TensorView& weight, float eps, const TensorView& out) {
  Timed("add rmsnorm", [&] { inner().AddRmsNorm(x, branch, weight, eps, out); });
}

void TimingBackend::RmsNormLinear(const TensorView& x, const TensorView* branch,
                                  const TensorView& norm_weight, float eps,
                                  const TensorView& normed, const LinearWeight& w,
                                  const TensorView& y) {
  Timed(w.weight.dtype == DType::kF8E4M3 ? "rmsnorm linear fp8" : "rmsnorm linear",
        [&] { inner().RmsNormLinear(x, branch, norm_weight, eps, normed, w, y); });
}

void TimingBackend::PrepareMlaInputs(const MlaInputs& in, const TensorView& norm_weight,
                                     float eps, std::span<const int32_t> positions,
                                     const RopeParams& rope, const AttentionBatch& batch,
                                     const TensorView& cache) {
  Timed("prepare mla inputs",
        [&] { inner().PrepareMlaInputs(in, norm_weight, eps, positions, rope, batch, cache); });
}

void TimingBackend::MlaQueryAndInputs(const MlaQueryArgs& a, std::span<const int32_t> positions,
                                      const RopeParams& rope, const AttentionBatch& batch,
                                      const TensorView& cache) {
  Timed("mla query and inputs",
        [&] { inner().MlaQueryAndInputs(a, positions, rope, batch, cache); });
}

void TimingBackend::Rope(const TensorView& x, std::span<const int32_t> positions,
                         const RopeParams& rope) {
  Timed("rope", [&] { inner().Rope(x, positions, rope); });
}

void TimingBackend::SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) {
  Timed("silu_mul", [&] { inner().SiluMul(gate, up, out); });
}

void TimingBackend::Copy(const TensorView& src, const TensorView& dst) {
  Timed("copy", [&] { inner().Copy(src, dst); });
}

void TimingBackend::GatherRows(const TensorView& x, std::span<const int32_t> rows,
                               const TensorView& out) {
  Timed("gather_rows", [&] { inner().GatherRows(x, rows, out); });
}

void TimingBackend::ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                                   const TensorView& out) {
  Timed("scatter_sum_rows", [&] { inner().ScatterSumRows(x, index, out); });
}

void TimingBackend::PadRows(const TensorView& x, float fill, const TensorView& out) {
  Timed("pad_rows", [&] { inner().PadRows(x, fill, out); });
}

void TimingBackend::SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) {
  Timed("sum_row_blocks", [&] { inner().SumRowBlocks(x, blocks, out); });
}

void TimingBackend::WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                                 const TensorView& cache) {
  Timed("write_kv_cache", [&] { inner().WriteKvCache(latent, batch, cache); });
}

void TimingBackend::MlaAttention(const TensorView& q, const TensorView& cache,
                                 const LinearWeight& kv_b, const AttentionBatch& batch,
                                 const MlaParams& params, const TensorView& out) {
  Timed("mla attention", [&] { inner().MlaAttention(q, cache, kv_b, batch, params, out); });
}

void TimingBackend::MlaAttentionLinear(const TensorView& q, const TensorView& cache,
                                       const LinearWeight& kv_b, const AttentionBatch& batch,
                                       const MlaParams& params, const TensorView& attn,
                                       const LinearWeight& o_proj, const TensorView& out) {
  Timed("mla attention + o_proj", [&] {
    inner().MlaAttentionLinear(q, cache, kv_b, batch, params, attn, o_proj, out);
  });
}

void TimingBackend::MoeRoute(const TensorView& x, const TensorView& router,
                             const TensorView& bias, const MoeRouteParams& params,
                             const TensorView& topk_ids, const TensorView& topk_weights) {
  Timed("moe route", [&] { inner().MoeRoute(x, router, bias, params, topk_ids, topk_weights); });
}

void TimingBackend::MoeExperts(const TensorView& x, const TensorView& topk_ids,
                               const TensorView& topk_weights,
                               std::span<const ExpertWeights> experts, int64_t expert_begin,
                               const TensorView& out) {
  Timed("moe experts",
        [&] { inner().MoeExperts(x, topk_ids, topk_weights, experts, expert_begin, out); });
}

bool TimingBackend::MoeExpertsWithShared(const TensorView& x, const TensorView& topk_ids,
                                         const TensorView& topk_weights,
                                         std::span<const ExpertWeights> experts,
                                         int64_t expert_begin, const ExpertWeights& shared,
                                         const TensorView& out) {
  bool done = false;
  Timed("moe experts + shared", [&] {
    done =
        inner().MoeExpertsWithShared(x, topk_ids, topk_weights, experts, expert_begin, shared, out);
  });
  return done;
}

}  // namespace dsv3
