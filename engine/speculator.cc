#include "engine/speculator.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "engine/model/model.h"
#include "engine/sampling/speculative.h"
#include "engine/util/status_macros.h"

namespace dsv3 {

Speculator::Speculator(ModelRunner& runner, Sampler& sampler, int32_t max_drafts)
    : runner_(runner),
      sampler_(sampler),
      vocab_(runner.model().config().vocab_size),
      hidden_size_(runner.model().config().hidden_size) {
  stats_.proposed.assign(max_drafts, 0);
  stats_.accepted.assign(max_drafts, 0);
}

void Speculator::AddDraft(Drafts& d, absl::Span<const float> logits,
                          absl::Span<const float> hidden, const DraftRequest& request) {
  std::vector<float>& q = d.q.emplace_back();
  sampler_.Probabilities(logits, *request.params, *request.state, q);
  d.tokens.push_back(DrawFrom(q, request.state->rng()));
  d.hidden.assign(hidden.begin(), hidden.end());
}

absl::Status Speculator::Draft(StepPlan& plan, RequestLookup lookup) {
  int32_t max_drafts = 0;
  for (const ScheduledSequence& e : plan.sequences) max_drafts = std::max(max_drafts, e.num_drafts);
  // Chain step j drafts token j of every entry with more than j drafts: the MTP module at
  // position context_begin + j - 1, fed draft j - 1 and its own output state from before.
  for (int32_t j = 1; j < max_drafts; ++j) {
    ForwardBatch mtp;
    std::vector<float> h;  // [rows, H]
    std::vector<std::pair<Drafts*, DraftRequest>> rows;
    for (const ScheduledSequence& e : plan.sequences) {
      if (e.num_drafts <= j) continue;
      auto it = drafts_.find(e.id);
      const DraftRequest request = lookup(e.id);
      if (it == drafts_.end() || request.params == nullptr) continue;
      Drafts& d = it->second;
      assert(static_cast<int32_t>(d.tokens.size()) == j);
      mtp.sequences.push_back({.token_begin = mtp.num_tokens(),
                               .num_tokens = 1,
                               .context_begin = e.context_begin + j - 1,
                               .block_table = e.block_table,
                               .attention_rank = e.attention_rank});
      mtp.logits_rows.push_back(mtp.num_tokens());
      mtp.token_ids.push_back(d.tokens[j - 1]);
      h.insert(h.end(), d.hidden.begin(), d.hidden.end());
      rows.emplace_back(&d, request);
    }
    if (rows.empty()) break;
    std::vector<float> logits, hidden_out;
    DSV3_RETURN_IF_ERROR(runner_.ExecuteMtp(mtp, h, logits, hidden_out));
    for (size_t r = 0; r < rows.size(); ++r) {
      AddDraft(*rows[r].first, absl::MakeConstSpan(logits).subspan(r * vocab_, vocab_),
               absl::MakeConstSpan(hidden_out).subspan(r * hidden_size_, hidden_size_),
               rows[r].second);
    }
  }
  for (ScheduledSequence& e : plan.sequences) {
    auto it = drafts_.find(e.id);
    if (e.num_drafts == 0 || it == drafts_.end()) continue;
    const std::vector<int32_t>& tokens = it->second.tokens;
    const size_t n = std::min<size_t>(tokens.size(), e.num_drafts);
    std::copy(tokens.begin(), tokens.begin() + n, e.token_ids.begin() + 1);
  }
  return absl::OkStatus();
}

std::vector<SampledToken> Speculator::Verify(const ScheduledSequence& entry,
                                             absl::Span<const float> logits,
                                             const SamplingParams& params,
                                             SequenceSamplingState& state) {
  auto it = drafts_.find(entry.id);
  // Drafts are there for every decode that follows a sampled step; without them (never
  // expected) the step degrades to one token.
  const Drafts* d = it == drafts_.end() ? nullptr : &it->second;
  const int32_t k =
      d != nullptr && static_cast<int32_t>(d->tokens.size()) >= entry.num_drafts ? entry.num_drafts
                                                                                 : 0;
  std::vector<SampledToken> out;
  int32_t accepted = 0;
  for (int32_t j = 0; j < k; ++j) {
    const absl::Span<const float> row = logits.subspan(j * vocab_, vocab_);
    sampler_.Probabilities(row, params, state, p_);
    const DraftVerdict v = VerifyDraft(p_, d->q[j], d->tokens[j], state.rng());
    out.push_back(sampler_.Take(row, v.token, params, state));
    if (!v.accepted) break;
    ++accepted;
  }
  for (int32_t j = 0; j < k; ++j) {
    ++stats_.proposed[j];
    if (j < accepted) ++stats_.accepted[j];
  }
  if (accepted == k) {
    // Every draft accepted: one more token from the last row, as without speculation.
    out.push_back(sampler_.Sample(logits.subspan(k * vocab_, vocab_), params, state));
  }
  return out;
}

absl::Status Speculator::Extend(const StepPlan& plan, const ForwardBatch& batch,
                                absl::Span<const float> hidden,
                                const DataParallelScheduler& scheduler, RequestLookup lookup) {
  ForwardBatch mtp;
  std::vector<float> h;  // [rows, H]: main final hidden state of each kept position
  std::vector<SequenceId> sampled;
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const ScheduledSequence& e = plan.sequences[i];
    const Sequence* seq = scheduler.Find(e.id);
    if (seq == nullptr || seq->status() != SequenceStatus::kRunning) continue;
    // Positions [context_begin, computed) were computed and kept; row r of them takes token
    // context_begin + r + 1, known now.
    const int32_t kept = seq->num_computed_tokens() - e.context_begin;
    assert(kept >= 1 && kept <= e.num_new_tokens());
    const absl::Span<const int32_t> next = seq->token_ids().subspan(e.context_begin + 1, kept);
    mtp.sequences.push_back({.token_begin = mtp.num_tokens(),
                             .num_tokens = kept,
                             .context_begin = e.context_begin,
                             .block_table = e.block_table,
                             .attention_rank = e.attention_rank});
    mtp.token_ids.insert(mtp.token_ids.end(), next.begin(), next.end());
    const int64_t row = batch.sequences[i].token_begin;
    h.insert(h.end(), hidden.begin() + row * hidden_size_,
             hidden.begin() + (row + kept) * hidden_size_);
    if (e.sample) {
      mtp.logits_rows.push_back(mtp.num_tokens() - 1);
      sampled.push_back(e.id);
    }
  }
  if (mtp.token_ids.empty()) return absl::OkStatus();
  std::vector<float> logits, hidden_out;
  DSV3_RETURN_IF_ERROR(runner_.ExecuteMtp(mtp, h, logits, hidden_out));
  for (size_t r = 0; r < sampled.size(); ++r) {
    const DraftRequest request = lookup(sampled[r]);
    if (request.params == nullptr) {
      drafts_.erase(sampled[r]);
      continue;
    }
    Drafts& d = drafts_[sampled[r]];
    d = Drafts{};
    AddDraft(d, absl::MakeConstSpan(logits).subspan(r * vocab_, vocab_),
             absl::MakeConstSpan(hidden_out).subspan(r * hidden_size_, hidden_size_), request);
  }
  return absl::OkStatus();
}

}  // namespace dsv3
