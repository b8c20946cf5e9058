#include "engine/model/step_graphs.h"

#include <algorithm>
#include <cassert>
#include <span>

#include "engine/backend/graph_policy.h"
#include "engine/model/model.h"
#include "engine/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

DecodeGraphRunner::DecodeGraphRunner(DeepseekV3Model& model)
    : DecodeGraphRunner(model, Options{}) {}

DecodeGraphRunner::DecodeGraphRunner(DeepseekV3Model& model, Options options)
    : model_(model), sizes_(GraphBatchSizes(options.max_sequences)) {}

DecodeGraphRunner::~DecodeGraphRunner() { DropGraphs(); }

void DecodeGraphRunner::DropGraphs() {
  if (StepGraphCapture* capture = model_.backend().step_graphs(); capture != nullptr) {
    if (!graphs_.empty()) capture->DropAll();
  }
  graphs_.clear();
  cache_ = nullptr;
}

DecodeGraphRunner::Stats DecodeGraphRunner::stats() const {
  Stats s = stats_;
  s.graphs = 0;
  for (const auto& [key, entry] : graphs_) s.graphs += entry.graph >= 0;
  StepGraphCapture* capture = model_.backend().step_graphs();
  s.memory_bytes = (capture != nullptr ? capture->memory_bytes() : 0) +
                   logits_out_.view().nbytes() + hidden_out_.view().nbytes();
  return s;
}

void DecodeGraphRunner::EnsureOutputs() {
  if (!logits_out_.empty()) return;
  const ModelConfig& c = model_.config();
  Backend& b = model_.backend();
  const int64_t rows = std::min<int64_t>(kMaxGraphTokens, int64_t{sizes_.back()} *
                                                              kAbsorbedMaxNewTokens);
  logits_out_ = Tensor(b.allocator(), DType::kF32, {rows, c.vocab_size});
  hidden_out_ = Tensor(b.allocator(), DType::kF32, {rows, c.hidden_size});
}

namespace {

// Rows `rows` of `src` [R, W] (F32) into `dst` [rows.size(), W]: one download when they are
// rows 0, 1, ... in order (a decode step's logits), else one per row.
void DownloadRows(Backend& b, const TensorView& src, std::span<const int32_t> rows, float* dst) {
  const int64_t n = static_cast<int64_t>(rows.size()), width = src.dim(1);
  if (IsEveryRow(rows, n)) {
    if (n > 0) b.Download(src.Rows(0, n), dst);
    return;
  }
  for (int64_t i = 0; i < n; ++i) b.Download(src.Rows(rows[i], rows[i] + 1), dst + i * width);
}

}  // namespace

absl::Status DecodeGraphRunner::Forward(const ForwardBatch& batch, KvCache& cache,
                                        std::vector<float>& logits, MlaMode mla_mode,
                                        std::vector<float>* hidden) {
  StepGraphCapture* capture = model_.backend().step_graphs();
  std::optional<GraphStepShape> shape;
  // A data-parallel part (max_rank_tokens set) is graphed only at the shape every rank shares
  // (ForwardDataParallel): padded alone, its rows could pass the capacity the others use.
  if (capture != nullptr && mla_mode == MlaMode::kAuto && !sizes_.empty() &&
      batch.max_rank_tokens < 0) {
    const ModelConfig& c = model_.config();
    shape = GraphShapeOf(batch, sizes_,
                         !capture->DecodeReadsOwnKeysOnly(c.kv_lora_rank, c.qk_rope_head_dim));
  }
  if (!shape) {
    ++stats_.eager;
    return model_.Forward(batch, cache, logits, mla_mode, hidden);
  }
  return RunGraphStep(*capture, batch, *shape, cache, logits, hidden);
}

std::optional<GraphStepShape> DecodeGraphRunner::DataParallelShape(
    std::span<const AttentionRankPart> parts, MlaMode mla_mode) const {
  if (mla_mode != MlaMode::kAuto || sizes_.empty()) return std::nullopt;
  const ModelConfig& c = model_.config();
  StepGraphCapture* capture = model_.backend().step_graphs();
  const bool even_contexts_needed =
      capture == nullptr || !capture->DecodeReadsOwnKeysOnly(c.kv_lora_rank, c.qk_rope_head_dim);
  return DataParallelGraphShape(parts, sizes_, even_contexts_needed);
}

absl::Status DecodeGraphRunner::ForwardDataParallel(const ForwardBatch& batch,
                                                    const GraphStepShape& shape, KvCache& cache,
                                                    std::vector<float>& logits,
                                                    std::vector<float>* hidden) {
  assert(batch.max_rank_tokens == shape.rows());
  StepGraphCapture* capture = model_.backend().step_graphs();
  if (capture == nullptr) {
    ++stats_.eager;
    return model_.Forward(batch, cache, logits, MlaMode::kAuto, hidden);
  }
  return RunGraphStep(*capture, batch, shape, cache, logits, hidden);
}

absl::Status DecodeGraphRunner::RunGraphStep(StepGraphCapture& capture, const ForwardBatch& batch,
                                             const GraphStepShape& shape, KvCache& cache,
                                             std::vector<float>& logits,
                                             std::vector<float>* hidden) {
  if (cache.layer(0).data != cache_) {
    // Graphs write the cache they were captured with: a new cache (KV sizing's dummy one
    // replaced by the real one) starts over.
    DropGraphs();
    cache_ = cache.layer(0).data;
  }
  EnsureOutputs();
  const ModelConfig& c = model_.config();
  const bool with_hidden = hidden != nullptr;
  const ForwardBatch padded =
      PadForGraph(batch, shape, cache.block_size(), cache.scratch_block(), with_hidden);
  const int64_t rows = padded.num_tokens();
  const AttentionBatch ab =
      model_.BeginStep(padded, cache, MlaMode::kAuto, shape.context_bucket);
  // Every rank runs the head (its all-gather); only rank 0 keeps logits.
  const TensorView logits_view =
      model_.returns_outputs() ? logits_out_.view().Rows(0, rows) : TensorView();
  const TensorView hidden_view =
      with_hidden && model_.returns_outputs() ? hidden_out_.view().Rows(0, rows) : TensorView();
  const auto body = [&] { return model_.RunStep(padded, ab, cache, logits_view, hidden_view); };

  Entry& g = graphs_[Key{shape, with_hidden, capture.plan_epoch(), padded.max_rank_tokens}];
  if (g.graph >= 0) {
    ++stats_.replayed;
    capture.Launch(g.graph, body);
  } else if (g.eager_only) {
    ++stats_.eager;
    DSV3_RETURN_IF_ERROR(body());
  } else if (!g.clean) {
    ++stats_.measured;
    capture.BeginMeasuredRun();
    const absl::Status status = body();
    const StepGraphCapture::Measure m = capture.EndMeasuredRun();
    DSV3_RETURN_IF_ERROR(status);
    g.temporaries_bytes = m.temporaries_bytes;
    g.clean = !m.host_work;
  } else {
    absl::StatusOr<StepGraphCapture::GraphId> id = capture.Capture(g.temporaries_bytes, body);
    if (absl::IsResourceExhausted(id.status())) {
      g.eager_only = true;
      ++stats_.over_budget;
      ++stats_.eager;
      spdlog::warn("decode graphs: no room to capture {} sequences x {} tokens (context bucket "
                   "{}) within --cuda-graph-memory-mb; that shape runs eagerly",
                   shape.sequences, shape.tokens_per_sequence, shape.context_bucket);
      DSV3_RETURN_IF_ERROR(body());
    } else {
      DSV3_RETURN_IF_ERROR(id.status());
      g.graph = *id;
      ++stats_.captured;
      spdlog::info("decode graphs: captured {} sequences x {} tokens (context bucket {}); {} "
                   "captured so far, {:.1f} MB of graph memory",
                   shape.sequences, shape.tokens_per_sequence, shape.context_bucket,
                   stats_.captured, capture.memory_bytes() / 1e6);
      capture.Launch(g.graph, body);
    }
  }

  if (!model_.returns_outputs()) {
    logits.clear();
    return absl::OkStatus();
  }
  // The real rows come first ([0, b k)); the caller's rows are picked from them straight into
  // its vectors, which it keeps across steps (a fresh [rows, vocab] buffer per step cost more
  // in page faults than the step itself at batch 128).
  Backend& b = model_.backend();
  logits.resize(batch.logits_rows.size() * c.vocab_size);
  DownloadRows(b, logits_out_.view(), batch.logits_rows, logits.data());
  if (with_hidden) {
    hidden->resize(batch.hidden_rows.size() * c.hidden_size);
    DownloadRows(b, hidden_out_.view(), batch.hidden_rows, hidden->data());
  }
  return absl::OkStatus();
}

}  // namespace dsv3
