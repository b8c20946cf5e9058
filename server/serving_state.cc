#include "server/serving_state.h"

#include "absl/strings/str_cat.h"

namespace dsv3::server {

void ServingState::SetServing(LoadedModel* model) {
  model_.store(model, std::memory_order_release);
  Phase expected = Phase::kLoading;
  // A drain that began during loading wins: the server never starts serving.
  phase_.compare_exchange_strong(expected, Phase::kServing);
}

grpc::Status ServingState::Admit(const grpc::CallbackServerContext& context) const {
  // Authentication first, so that an unauthenticated caller learns nothing about the server.
  if (grpc::Status st = auth_.Check(context.client_metadata()); !st.ok()) return st;
  return PhaseStatus();
}

grpc::Status ServingState::AdmitHeaders(
    const std::vector<std::pair<std::string_view, std::string_view>>& headers) const {
  if (grpc::Status st = auth_.CheckHeaders(headers); !st.ok()) return st;
  return PhaseStatus();
}

grpc::Status ServingState::PhaseStatus() const {
  switch (phase_.load()) {
    case Phase::kLoading:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading; retry");
    case Phase::kDraining:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the server is shutting down and admits no new requests");
    case Phase::kServing:
      break;
  }
  return grpc::Status::OK;
}

bool ServingState::TryStartStream() {
  int64_t n = in_flight_.load();
  do {
    if (n >= max_in_flight_) return false;
  } while (!in_flight_.compare_exchange_weak(n, n + 1));
  return true;
}

std::string ServingState::NewRequestId(const std::string& client_id) {
  const int64_t n = next_id_.fetch_add(1);
  return client_id.empty() ? absl::StrCat("r", n) : client_id;
}

}  // namespace dsv3::server
