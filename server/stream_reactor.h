// The common half of the Generate and Chat reactors: feeds one engine request's output stream to
// a gRPC server stream, never blocking a gRPC or engine thread.
//
// The engine thread signals a new delta through RequestStream::SetNotify; the reactor then takes
// deltas with TryNext and keeps at most one write outstanding (OnWriteDone takes the next). While
// a write is in flight, deltas wait in the engine's bounded per-request queue (which merges them
// when full), so a slow client costs bounded memory and never stalls the engine. A cancelled call
// or an expired deadline (gRPC cancels the call) aborts the engine request, which frees its KV
// blocks at the next step. Finish is called exactly once; OnDone deletes the reactor.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/cancel_reason.h"
#include "server/serving_state.h"
#include "server/status_util.h"
#include "spdlog/spdlog.h"

namespace dsv3::server {

template <typename Response>
class StreamReactor : public grpc::ServerWriteReactor<Response> {
 protected:
  StreamReactor(ServingState& state, grpc::CallbackServerContext* context, std::string method)
      : state_(state),
        context_(context),
        method_(std::move(method)),
        received_(std::chrono::system_clock::now()) {
    state_.metrics().StreamStarted();
  }

  // Fills `response` from `delta` (content only: finish reason and usage are added here).
  // False when there is nothing to send (e.g. text held back by a parser).
  virtual bool Fill(OutputDelta& delta, Response& response) = 0;

  // Submits `request` and starts streaming; on a submit error, finishes the call with it. Called
  // once, from the subclass constructor.
  // Admits the call (auth, serving phase) and names it after the client's request id (checked)
  // or a counter. False, with the call already finished, when either fails.
  bool AdmitAndName(const std::string& client_request_id) {
    if (grpc::Status st = state_.Admit(*context_); !st.ok()) {
      Reject(st);
      return false;
    }
    auto client_id = ClientRequestId(client_request_id);
    if (!client_id.ok()) {
      Reject(ToGrpcStatus(client_id.status()));
      return false;
    }
    request_id_ = state_.NewRequestId(*client_id);
    return true;
  }

  void Submit(EngineRequest request) {
    request.request_id = request_id_;
    if (!state_.TryStartStream()) {
      Reject(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "too many requests in flight (limit " +
                              std::to_string(state_.max_in_flight()) +
                              ": --max-running-seqs plus --max-queued-requests); retry later"));
      return;
    }
    holds_slot_ = true;
    spdlog::debug("{} {}: {} prompt tokens, max_tokens {}", request_id_, method_,
                  request.prompt_ids.size(), request.sampling.max_tokens);
    auto stream = state_.model().engine->Submit(std::move(request));
    if (!stream.ok()) {
      Reject(ToGrpcStatus(stream.status()));
      return;
    }
    stream_ = *std::move(stream);
    link_ = std::make_shared<Link>();
    link_->pump = [this] { Pump(); };
    // The notify function outlives this reactor inside the engine; it reaches the reactor only
    // through `link`, which OnDone clears under its mutex.
    stream_->SetNotify([link = link_] {
      absl::MutexLock lock(&link->mu);
      if (link->pump) link->pump();
    });
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

  ServingState& state_;
  grpc::CallbackServerContext* const context_;
  const std::string method_;
  const std::chrono::system_clock::time_point received_;  // for ClassifyCancel
  std::string request_id_;

 private:
  struct Link {
    absl::Mutex mu;
    std::function<void()> pump ABSL_GUARDED_BY(mu);
  };

  // Takes deltas while no write is outstanding; starts one write, or the final write and Finish.
  void Pump() {
    for (;;) {
      std::optional<grpc::Status> finish_status;
      bool write = false;
      {
        absl::MutexLock lock(&mu_);
        if (writing_ || finished_) return;
        std::optional<OutputDelta> delta = stream_->TryNext();
        if (!delta) return;
        response_.Clear();
        write = Fill(*delta, response_);
        if (delta->finished()) {
          finished_ = true;
          finish_status = FinalStatus(*delta);
          AddUsage(*delta, response_);
          write = true;
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
      state_.model().engine->Abort(stream_->id());
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
    if (stream_) state_.model().engine->Abort(stream_->id());
    spdlog::info("{} {}: {}, aborted in the engine", request_id_, method_,
                 deadline_passed ? "deadline exceeded" : "cancelled by the client");
    if (finish_now) FinishCall(status);
  }

  void OnDone() override {
    if (link_) {
      absl::MutexLock lock(&link_->mu);
      link_->pump = nullptr;
    }
    if (stream_) stream_->SetNotify(nullptr);
    if (holds_slot_) state_.EndStream();
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
    state_.metrics().RecordLatency(delta.time_to_first_token_s, delta.time_per_output_token_s,
                                   delta.completion_tokens);
    spdlog::info("{} {}: {} after {}+{} tokens ({} cached), ttft {:.1f} ms, {:.2f} ms/token",
                 request_id_, method_, FinishReasonName(delta.finish_reason), delta.prompt_tokens,
                 delta.completion_tokens, delta.cached_tokens, delta.time_to_first_token_s * 1e3,
                 delta.time_per_output_token_s * 1e3);
  }

  // The only place Finish is called; callers make sure it runs once (`finished_`).
  void FinishCall(const grpc::Status& status, const Response* last = nullptr) {
    state_.metrics().RecordCall(method_, status.error_code());
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED &&
        status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      spdlog::info("{} {}: {}: {}", request_id_, method_, GrpcCodeName(status.error_code()),
                   status.error_message());
    }
    if (last != nullptr) {
      this->StartWriteAndFinish(last, grpc::WriteOptions(), status);
    } else {
      this->Finish(status);
    }
  }

  std::shared_ptr<RequestStream> stream_;
  std::shared_ptr<Link> link_;
  bool holds_slot_ = false;  // counted in ServingState's streams in flight
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;   // a StartWrite awaits OnWriteDone
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called or scheduled
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  Response response_;  // the message being written; touched only while no write is outstanding
};

}  // namespace dsv3::server
