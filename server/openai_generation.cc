#include "server/openai_generation.h"

#include "absl/strings/str_cat.h"

namespace dsv3::server::openai {

absl::StatusOr<std::unique_ptr<Generation>> Generation::Start(ServingState& state,
                                                              const ParsedRequest& request,
                                                              const std::string& request_id) {
  std::unique_ptr<Generation> g(new Generation(state));
  for (int i = 0; i < request.n; ++i) {
    if (!state.TryStartStream()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("too many requests in flight (limit ", state.max_in_flight(),
                       ": --max-running-seqs plus --max-queued-requests); retry later"));
    }
    ++g->slots_;
    EngineRequest er = request.request;
    er.request_id = request.n == 1 ? request_id : absl::StrCat(request_id, "/", i);
    if (er.sampling.seed) *er.sampling.seed += i;
    auto stream = state.model().engine->Submit(std::move(er));
    if (!stream.ok()) return stream.status();  // ~Generation aborts the ones before
    (*stream)->SetNotify([signal = g->signal_] {
      absl::MutexLock lock(&signal->mu);
      signal->ready = true;
    });
    g->streams_.push_back(*std::move(stream));
    g->stream_done_.push_back(false);
  }
  return g;
}

Generation::~Generation() {
  Abort();
  for (const auto& stream : streams_) stream->SetNotify(nullptr);
  for (int i = 0; i < slots_; ++i) state_.EndStream();
}

std::vector<std::pair<int, OutputDelta>> Generation::Next(absl::Duration timeout) {
  {
    absl::MutexLock lock(&signal_->mu);
    signal_->mu.AwaitWithTimeout(absl::Condition(&signal_->ready), timeout);
    signal_->ready = false;
  }
  // Deltas pushed after `ready` was cleared set it again: none is missed.
  std::vector<std::pair<int, OutputDelta>> out;
  for (size_t i = 0; i < streams_.size(); ++i) {
    while (!stream_done_[i]) {
      std::optional<OutputDelta> delta = streams_[i]->TryNext();
      if (!delta) break;
      if (delta->finished()) {
        stream_done_[i] = true;
        ++finished_;
      }
      out.emplace_back(static_cast<int>(i), *std::move(delta));
    }
  }
  return out;
}

void Generation::Abort() {
  for (size_t i = 0; i < streams_.size(); ++i) {
    if (!stream_done_[i]) state_.model().engine->Abort(streams_[i]->id());
  }
}

}  // namespace dsv3::server::openai
