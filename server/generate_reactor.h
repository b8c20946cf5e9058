// The Generate RPC: one prompt (text or token ids) in, a stream of output deltas out.
#pragma once

#include "dsv3/v1/inference.grpc.pb.h"
#include "server/stream_reactor.h"

namespace dsv3::server {

class GenerateReactor final : public StreamReactor<v1::GenerateResponse> {
 public:
  // Validates and submits; on any error the call finishes at once with the matching code.
  GenerateReactor(ServingState& state, grpc::CallbackServerContext* context,
                  const v1::GenerateRequest& request);

 private:
  bool Fill(OutputDelta& delta, v1::GenerateResponse& response) override;

  bool return_token_ids_ = true;
  bool return_text_ = false;
};

// Copies per-token logprobs (shared by Generate and Chat).
template <typename Response>
void AddLogprobs(const OutputDelta& delta, Response& response) {
  for (size_t i = 0; i < delta.logprobs.size() && i < delta.token_ids.size(); ++i) {
    v1::TokenLogprob* lp = response.add_logprobs();
    lp->set_token_id(delta.token_ids[i]);
    lp->set_logprob(delta.logprobs[i]);
    if (i < delta.top_logprobs.size()) {
      for (const TokenLogprob& top : delta.top_logprobs[i]) {
        v1::TopLogprob* t = lp->add_top();
        t->set_token_id(top.token);
        t->set_logprob(top.logprob);
      }
    }
  }
}

}  // namespace dsv3::server
