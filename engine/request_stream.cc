#include <utility>

#include "engine/engine.h"

namespace dsv3 {

namespace {

// Appends `next` to `into` (when a consumer lags: the queue is full, or TakeAll).
void Merge(OutputDelta& into, OutputDelta&& next) {
  into.token_ids.insert(into.token_ids.end(), next.token_ids.begin(), next.token_ids.end());
  into.text += next.text;
  into.logprobs.insert(into.logprobs.end(), next.logprobs.begin(), next.logprobs.end());
  for (auto& top : next.top_logprobs) into.top_logprobs.push_back(std::move(top));
  if (next.finished()) {
    into.finish_reason = next.finish_reason;
    into.error = std::move(next.error);
    into.error_code = next.error_code;
    into.prompt_tokens = next.prompt_tokens;
    into.completion_tokens = next.completion_tokens;
    into.cached_tokens = next.cached_tokens;
    into.time_to_first_token_s = next.time_to_first_token_s;
    into.time_per_output_token_s = next.time_per_output_token_s;
  }
}

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "?";
}

std::optional<OutputDelta> RequestStream::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (closed_) return std::nullopt;
  const auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !queue_.empty(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) return std::nullopt;
  OutputDelta delta = std::move(queue_.front());
  queue_.pop_front();
  if (delta.finished()) closed_ = true;
  return delta;
}

std::optional<OutputDelta> RequestStream::TakeAll() {
  absl::MutexLock lock(&mu_);
  if (closed_ || queue_.empty()) return std::nullopt;
  OutputDelta delta = std::move(queue_.front());
  queue_.pop_front();
  while (!delta.finished() && !queue_.empty()) {
    Merge(delta, std::move(queue_.front()));
    queue_.pop_front();
  }
  if (delta.finished()) closed_ = true;
  return delta;
}

void RequestStream::SetNotify(std::function<void()> notify) {
  bool pending;
  {
    absl::MutexLock lock(&mu_);
    notify_ = notify;
    pending = !queue_.empty();
  }
  // Output that arrived before the consumer registered must not go unnoticed.
  if (pending && notify) notify();
}

void RequestStream::Push(OutputDelta delta) {
  std::function<void()> notify;
  {
    absl::MutexLock lock(&mu_);
    if (static_cast<int32_t>(queue_.size()) >= capacity_) {
      Merge(queue_.back(), std::move(delta));
    } else {
      queue_.push_back(std::move(delta));
    }
    notify = notify_;
  }
  if (notify) notify();
}

}  // namespace dsv3
