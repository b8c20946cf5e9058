// The common half of the Generate and Chat reactors: feeds the output streams of a call's engine
// requests (n choices, each response tagged with its choice's index) to a gRPC server stream,
// never blocking a gRPC or engine thread.
//
// The engine thread signals a new delta through RequestStream::SetNotify, which posts the
// reactor's pump to the server's StreamPump threads (no gRPC or protobuf work on the engine
// thread). The pump takes every queued delta of a choice at once (TakeAll, merged into one
// response) and keeps at most one write outstanding (OnWriteDone takes the next). While a write
// is in flight, deltas wait in the engine's bounded per-request queue (which merges them when
// full), so a slow client costs bounded memory and never stalls the engine, and a write that
// takes longer than a decode step does not leave the stream a token further behind with every
// step. A cancelled call or an expired deadline (gRPC cancels the call) aborts the engine request,
// which frees its KV blocks at the next step. Finish is called exactly once; OnDone deletes the
// reactor.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/cancel_reason.h"
#include "server/request_log.h"
#include "server/serving_state.h"
#include "server/status_util.h"
#include "spdlog/spdlog.h"

namespace dsv3::server {

template <typename Response>
class StreamReactor : public grpc::ServerWriteReactor<Response> {
 protected:
  StreamReactor(ServingState& state, grpc::CallbackServerContext* context, std::string method)
      : arrival_(MonotonicClock::now()),
        state_(state),
        context_(context),
        method_(std::move(method)),
        received_(std::chrono::system_clock::now()) {
    state_.metrics().StreamStarted();
  }

  // Fills `response` from `delta` of choice `index` (content only: index, finish reason and
  // usage are added here). False when there is nothing to send (e.g. text held back by a parser).
  virtual bool Fill(int index, OutputDelta& delta, Response& response) = 0;

  // Submits `request` and starts streaming; on a submit error, finishes the call with it. Called
  // once, from the subclass constructor.
  // Admits the call (auth, serving phase) and names it after the client's request id (checked;
  // the field, else the x-request-id metadata) or a counter, echoed in the initial metadata.
  // False, with the call already finished, when either fails.
  bool AdmitAndName(const std::string& client_request_id) {
    if (grpc::Status st = state_.Admit(*context_); !st.ok()) {
      Reject(st);
      return false;
    }
    std::string requested = client_request_id;
    if (requested.empty()) {
      const auto& metadata = context_->client_metadata();
      if (auto it = metadata.find("x-request-id"); it != metadata.end()) {
        requested.assign(it->second.data(), it->second.size());
      }
    }
    auto client_id = ClientRequestId(requested);
    if (!client_id.ok()) {
      Reject(ToGrpcStatus(client_id.status()));
      return false;
    }
    request_id_ = state_.NewRequestId(*client_id);
    context_->AddInitialMetadata("x-request-id", request_id_);
    return true;
  }

  // Submits `n` choices of `request` (choice i with seed + i when a seed is set), which share
  // the prompt's prefix cache and the call's arrival time. Each counts against the in-flight
  // limit.
  void Submit(EngineRequest request, int n = 1) {
    request.arrival = arrival_;
    for (int i = 0; i < n; ++i) {
      if (!state_.TryStartStream()) {
        AbortAll();
        Reject(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "too many requests in flight (limit " +
                                std::to_string(state_.max_in_flight()) +
                                ": --max-running-seqs plus --max-queued-requests); retry later"));
        return;
      }
      ++slots_;
      EngineRequest choice = request;
      choice.request_id = n == 1 ? request_id_ : request_id_ + "/" + std::to_string(i);
      if (choice.sampling.seed) *choice.sampling.seed += i;
      LogEvent(spdlog::level::debug, "submitted",
               {{"request_id", choice.request_id},
                {"method", method_},
                {"prompt_tokens", choice.prompt_ids.size()},
                {"max_tokens", choice.sampling.max_tokens}});
      auto stream = state_.model().engine->Submit(std::move(choice));
      if (!stream.ok()) {
        AbortAll();
        Reject(ToGrpcStatus(stream.status()));
        return;
      }
      streams_.push_back(*std::move(stream));
    }
    {
      absl::MutexLock lock(&mu_);
      done_.assign(streams_.size(), false);
    }
    link_ = std::make_shared<Link>();
    link_->pump = [this] { Pump(); };
    // The notify function runs on the engine thread and outlives this reactor inside the engine:
    // it only posts the pump to the server's StreamPump threads (once until that runs), and
    // reaches the reactor through `link`, which OnDone clears under its mutex.
    for (const auto& stream : streams_) {
      stream->SetNotify([link = link_, &pump = state_.stream_pump()] {
        if (link->scheduled.exchange(true)) return;
        pump.Post([link] {
          link->scheduled.store(false);  // output pushed from here on posts again
          absl::MutexLock lock(&link->mu);
          if (link->pump) link->pump();
        });
      });
    }
    Pump();  // deltas pushed before SetNotify
  }

  // Ends the call with `status` before anything was submitted.
  void Reject(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
    }
    FinishCall(status);
  }

  // When gRPC handed the call to us, before validation and tokenization: the start of its
  // latency metrics (time to first token, queue and end-to-end time).
  const MonotonicTime arrival_;
  ServingState& state_;
  grpc::CallbackServerContext* const context_;
  const std::string method_;
  const std::chrono::system_clock::time_point received_;  // for ClassifyCancel
  std::string request_id_;

 private:
  struct Link {
    absl::Mutex mu;
    std::function<void()> pump ABSL_GUARDED_BY(mu);
    std::atomic<bool> scheduled{false};  // a pump is posted and has not started yet
  };

  // Ends every choice in the engine (finished ones are ignored there); frees their KV blocks.
  void AbortAll() {
    for (const auto& stream : streams_) state_.model().engine->Abort(stream->id());
  }

  // Takes deltas while no write is outstanding, round robin over the choices; starts one write,
  // or the final write and Finish once every choice has finished (or one failed).
  void Pump() {
    for (;;) {
      std::optional<grpc::Status> finish_status;
      bool write = false;
      {
        absl::MutexLock lock(&mu_);
        if (writing_ || finished_) return;
        std::optional<OutputDelta> delta;
        int index = -1;
        for (size_t k = 0; k < streams_.size() && !delta; ++k) {
          const size_t i = (next_choice_ + k) % streams_.size();
          if (done_[i]) continue;
          delta = streams_[i]->TakeAll();
          index = static_cast<int>(i);
        }
        if (!delta) return;
        next_choice_ = (index + 1) % streams_.size();
        response_.Clear();
        write = Fill(index, *delta, response_);
        response_.set_index(index);
        if (delta->finished()) {
          done_[index] = true;
          ++choices_done_;
          AddUsage(*delta, response_);
          write = true;
          grpc::Status status = FinalStatus(*delta);
          if (!status.ok() || choices_done_ == static_cast<int>(streams_.size())) {
            finished_ = true;
            finish_status = status;
            if (!status.ok()) AbortAll();  // one failed choice fails the call
          } else {
            writing_ = true;
          }
        } else if (write) {
          writing_ = true;
        }
      }
      if (finish_status) {
        // The last response goes out even on an abort, so that no generated token is lost.
        FinishCall(*finish_status, write ? &response_ : nullptr);
        return;
      }
      if (write) {
        this->StartWrite(&response_);
        return;
      }
    }
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish_status;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (pending_finish_) {
        finish_status = std::exchange(pending_finish_, std::nullopt);
      } else if (!ok && !finished_) {
        finished_ = true;  // the client is gone, or its deadline passed (this may precede OnCancel)
        finish_status = EndedByGrpc("the stream broke");
      }
    }
    if (finish_status) {
      AbortAll();
      FinishCall(*finish_status);
      return;
    }
    Pump();
  }

  // DEADLINE_EXCEEDED or CANCELLED (with `cancelled`) for a call that gRPC ended under us.
  grpc::Status EndedByGrpc(const char* cancelled) const {
    if (ClassifyCancel(received_, context_->deadline(), std::chrono::system_clock::now()) ==
        CancelReason::kDeadline) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the call's deadline passed");
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, cancelled);
  }

  void OnCancel() override {
    const grpc::Status status = EndedByGrpc("cancelled by the client");
    const bool deadline_passed = status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    bool finish_now = false;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
      if (writing_) {
        pending_finish_ = status;  // Finish after the outstanding write completes
      } else {
        finish_now = true;
      }
    }
    AbortAll();
    LogEvent(spdlog::level::info,
             deadline_passed ? "deadline exceeded, aborted in the engine"
                             : "cancelled by the client, aborted in the engine",
             {{"request_id", request_id_}, {"method", method_}});
    if (finish_now) FinishCall(status);
  }

  void OnDone() override {
    if (link_) {
      absl::MutexLock lock(&link_->mu);
      link_->pump = nullptr;
    }
    for (const auto& stream : streams_) stream->SetNotify(nullptr);
    for (int i = 0; i < slots_; ++i) state_.EndStream();
    state_.metrics().StreamEnded();
    delete this;
  }

  grpc::Status FinalStatus(const OutputDelta& delta) {
    switch (delta.finish_reason) {
      case FinishReason::kError:
        // UNAVAILABLE when the model group broke (a tensor-parallel rank died); the engine says
        // which through error_code.
        return grpc::Status(delta.error_code == absl::StatusCode::kUnavailable
                                ? grpc::StatusCode::UNAVAILABLE
                                : grpc::StatusCode::INTERNAL,
                            "generation failed: " + delta.error);
      case FinishReason::kAbort:
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "the request was aborted: the server is shutting down");
      default:
        return grpc::Status::OK;
    }
  }

  void AddUsage(const OutputDelta& delta, Response& response) {
    switch (delta.finish_reason) {
      case FinishReason::kStop:
        response.set_finish_reason(v1::FINISH_REASON_STOP);
        break;
      case FinishReason::kLength:
        response.set_finish_reason(v1::FINISH_REASON_LENGTH);
        break;
      default:
        response.set_finish_reason(v1::FINISH_REASON_ABORT);
        break;
    }
    v1::Usage* usage = response.mutable_usage();
    usage->set_prompt_tokens(delta.prompt_tokens);
    usage->set_completion_tokens(delta.completion_tokens);
    usage->set_cached_tokens(delta.cached_tokens);
    usage->set_time_to_first_token_s(delta.time_to_first_token_s);
    usage->set_time_per_output_token_s(delta.time_per_output_token_s);
    LogFinished(request_id_, method_, delta);
  }

  // The only place Finish is called; callers make sure it runs once (`finished_`).
  void FinishCall(const grpc::Status& status, const Response* last = nullptr) {
    state_.metrics().RecordCall(method_, status.error_code());
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED &&
        status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      LogEvent(spdlog::level::info, "failed",
               {{"request_id", request_id_},
                {"method", method_},
                {"code", GrpcCodeName(status.error_code())},
                {"error", status.error_message()}});
    }
    if (last != nullptr) {
      this->StartWriteAndFinish(last, grpc::WriteOptions(), status);
    } else {
      this->Finish(status);
    }
  }

  std::vector<std::shared_ptr<RequestStream>> streams_;  // one per choice; set before Pump runs
  std::shared_ptr<Link> link_;
  int slots_ = 0;  // streams counted in ServingState's streams in flight
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;   // a StartWrite awaits OnWriteDone
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called or scheduled
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> done_ ABSL_GUARDED_BY(mu_);  // per choice: its last delta was taken
  int choices_done_ ABSL_GUARDED_BY(mu_) = 0;
  size_t next_choice_ ABSL_GUARDED_BY(mu_) = 0;
  Response response_;  // the message being written; touched only while no write is outstanding
};

}  // namespace dsv3::server
