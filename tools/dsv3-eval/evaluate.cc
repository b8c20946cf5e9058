#include "tools/dsv3-eval/evaluate.h"

#include <algorithm>
#include <optional>
#include <span>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "engine/eval/windows.h"
#include "engine/model/model.h"
#include "engine/util/npy.h"
#include "engine/util/status_macros.h"
#include "spdlog/spdlog.h"

namespace dsv3 {
namespace {

constexpr int32_t kBlockSize = 64;

struct PlannedWindow {
  const std::vector<int32_t>* sequence;
  EvalWindow window;
};

int32_t BlocksFor(int32_t tokens) { return (tokens + kBlockSize - 1) / kBlockSize; }

// The windows [first, first + count) as the sequences of one batch; window k uses cache blocks
// [k * blocks_per_window, ...) (every window starts at position 0 with an empty cache).
ForwardBatch MakeBatch(std::span<const PlannedWindow> windows, int32_t blocks_per_window) {
  ForwardBatch batch;
  for (size_t k = 0; k < windows.size(); ++k) {
    const EvalWindow& w = windows[k].window;
    const int32_t row0 = batch.num_tokens();
    const auto begin = windows[k].sequence->begin() + w.begin;
    batch.token_ids.insert(batch.token_ids.end(), begin, begin + w.length);
    SequenceSlice seq{row0, w.length, 0, {}};
    for (int32_t b = 0; b < BlocksFor(w.length); ++b) {
      seq.block_table.push_back(static_cast<int32_t>(k) * blocks_per_window + b);
    }
    batch.sequences.push_back(std::move(seq));
    for (int32_t j = w.first_scored; j < w.length - 1; ++j) batch.logits_rows.push_back(row0 + j);
  }
  return batch;
}

// The scores of `rows` rows, [rows, vocab] each in `logits` and, when not empty, `base`, on up
// to `threads` threads (each scores a contiguous range of rows).
std::vector<PositionScore> ScoreRows(std::span<const float> logits,
                                     std::span<const int32_t> targets, std::span<const float> base,
                                     int64_t vocab, int threads) {
  const size_t rows = targets.size();
  std::vector<PositionScore> scores(rows);
  const auto score_range = [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) {
      const auto row = [&](std::span<const float> m) {
        return m.empty() ? m : m.subspan(r * vocab, vocab);
      };
      scores[r] = ScorePosition(row(logits), targets[r], row(base));
    }
  };
  const size_t n = std::clamp<size_t>(threads, 1, rows);
  std::vector<std::thread> workers;
  for (size_t t = 1; t < n; ++t) {
    workers.emplace_back(score_range, rows * t / n, rows * (t + 1) / n);
  }
  score_range(0, rows / n);
  for (std::thread& w : workers) w.join();
  return scores;
}

}  // namespace

absl::StatusOr<EvalResult> Evaluate(ModelRunner& runner,
                                    const std::vector<std::vector<int32_t>>& sequences,
                                    const EvalOptions& options) {
  const int64_t vocab = runner.model().config().vocab_size;
  std::vector<PlannedWindow> plan;
  int64_t tokens = 0;
  int64_t input_tokens = 0;
  int32_t longest = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    auto windows = PlanWindows(static_cast<int64_t>(sequences[i].size()), options.context);
    if (!windows.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", i + 1, ": ", windows.status().message()));
    }
    for (const EvalWindow& w : *windows) {
      plan.push_back({&sequences[i], w});
      tokens += w.num_scored();
      longest = std::max(longest, w.length);
    }
    input_tokens += static_cast<int64_t>(sequences[i].size());
  }
  spdlog::info("{} sequence(s), {} tokens -> {} window(s) of <= {} tokens, {} scored; {} per step",
               sequences.size(), input_tokens, plan.size(), options.context, tokens,
               options.batch_windows);

  std::optional<NpyF32Reader> base;
  if (!options.kl_base.empty()) {
    DSV3_ASSIGN_OR_RETURN(base, NpyF32Reader::Open(options.kl_base));
    const std::vector<int64_t> want = {tokens, vocab};
    if (base->shape() != want) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--kl-base %s: holds logits of shape [%s], this run scores [%d, %d] (rows: %s, "
          "vocabulary: %s); it must come from --save-logits on the same inputs, --context and "
          "model vocabulary",
          options.kl_base, absl::StrJoin(base->shape(), ", "), tokens, vocab,
          base->shape().size() == 2 && base->shape()[0] == tokens ? "same" : "differ",
          base->shape().size() == 2 && base->shape()[1] == vocab ? "same" : "differ"));
    }
  }
  std::optional<NpyF32Writer> saved;
  if (!options.save_logits.empty()) {
    DSV3_ASSIGN_OR_RETURN(saved, NpyF32Writer::Create(options.save_logits, {tokens, vocab}));
  }

  const int32_t blocks_per_window = BlocksFor(longest);
  DSV3_RETURN_IF_ERROR(runner.AllocateCache(
      static_cast<int64_t>(options.batch_windows) * blocks_per_window, kBlockSize));
  Scorer scorer(/*with_base=*/base.has_value());
  std::vector<float> logits;       // [rows, vocab] of one step
  std::vector<float> base_logits;  // [rows, vocab] of the same rows in --kl-base
  std::vector<int32_t> targets;    // [rows]: the token each row predicts
  const absl::Time start = absl::Now();
  absl::Time last_report = start;
  int64_t scored = 0;
  for (size_t first = 0; first < plan.size(); first += options.batch_windows) {
    const size_t count = std::min<size_t>(options.batch_windows, plan.size() - first);
    const std::span<const PlannedWindow> step(plan.data() + first, count);
    const ForwardBatch batch = MakeBatch(step, blocks_per_window);
    DSV3_RETURN_IF_ERROR(runner.Execute(batch, logits));
    targets.clear();
    for (const PlannedWindow& p : step) {
      for (int32_t j = p.window.first_scored; j < p.window.length - 1; ++j) {
        targets.push_back((*p.sequence)[p.window.begin + j + 1]);
      }
    }
    if (base) {
      base_logits.resize(logits.size());
      DSV3_RETURN_IF_ERROR(base->Read(base_logits));
    }
    for (const PositionScore& score :
         ScoreRows(logits, targets, base_logits, vocab, options.score_threads)) {
      scorer.Add(score);
    }
    if (saved) DSV3_RETURN_IF_ERROR(saved->Append(logits));
    scored += static_cast<int64_t>(batch.logits_rows.size());
    const absl::Time now = absl::Now();
    if (now - last_report >= absl::Seconds(2) || first + count == plan.size()) {
      last_report = now;
      const double seconds = absl::ToDoubleSeconds(now - start);
      spdlog::info("window {}/{}: {}/{} tokens scored, ppl so far {:.4f}, {:.1f} s, {:.1f} tok/s",
                   first + count, plan.size(), scored, tokens, scorer.ppl(), seconds,
                   scored / std::max(seconds, 1e-9));
    }
  }
  if (saved) DSV3_RETURN_IF_ERROR(saved->Close());
  DSV3_ASSIGN_OR_RETURN(EvalSummary summary, scorer.Summary());
  return EvalResult{summary, static_cast<int64_t>(plan.size())};
}

}  // namespace dsv3
