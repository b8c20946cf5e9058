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
  bool Fill(int index, OutputDelta& delta, v1::GenerateResponse& response) override;

  bool return_token_ids_ = true;
  bool return_text_ = false;
};

// Copies per-token logprobs with each token's bytes (shared by Generate and Chat). `tokenizer`
// may be null: no token bytes then.
template <typename Response>
void AddLogprobs(const OutputDelta& delta, const Tokenizer* tokenizer, Response& response) {
  auto bytes = [tokenizer](int32_t id) {
    return tokenizer == nullptr ? std::string() : std::string(tokenizer->TokenBytes(id));
  };
  for (size_t i = 0; i < delta.logprobs.size() && i < delta.token_ids.size(); ++i) {
    v1::TokenLogprob* lp = response.add_logprobs();
    lp->set_token_id(delta.token_ids[i]);
    lp->set_logprob(delta.logprobs[i]);
    lp->set_token(bytes(delta.token_ids[i]));
    if (i < delta.top_logprobs.size()) {
      for (const TokenLogprob& top : delta.top_logprobs[i]) {
        v1::TopLogprob* t = lp->add_top();
        t->set_token_id(top.token);
        t->set_logprob(top.logprob);
        t->set_token(bytes(top.token));
      }
    }
  }
}

}  // namespace dsv3::server
