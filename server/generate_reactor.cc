#include "server/generate_reactor.h"

#include "server/validation.h"

namespace dsv3::server {

GenerateReactor::GenerateReactor(ServingState& state, grpc::CallbackServerContext* context,
                                 const v1::GenerateRequest& request)
    : StreamReactor(state, context, "Generate") {
  if (!AdmitAndName(request.request_id())) return;
  const LoadedModel& model = state_.model();
  auto call = BuildGenerateCall(request, model.limits(), model.tokenizer.get());
  if (!call.ok()) {
    Reject(ToGrpcStatus(call.status()));
    return;
  }
  return_token_ids_ = call->return_token_ids;
  return_text_ = call->return_text;
  Submit(std::move(call->request), call->n);
}

bool GenerateReactor::Fill(int, OutputDelta& delta, v1::GenerateResponse& response) {
  if (return_token_ids_)
    response.mutable_token_ids()->Add(delta.token_ids.begin(), delta.token_ids.end());
  if (return_text_) response.set_text(std::move(delta.text));
  AddLogprobs(delta, state_.model().tokenizer.get(), response);
  return response.token_ids_size() > 0 || !response.text().empty() || response.logprobs_size() > 0;
}

}  // namespace dsv3::server
