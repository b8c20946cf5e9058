// The Chat RPC: messages rendered with the V3 or R1 template; the output is split as it streams
// into content, reasoning (R1's <think> section) and tool calls (V3's format).
#pragma once

#include <vector>

#include "dsv3/v1/inference.grpc.pb.h"
#include "engine/tokenizer/reasoning_parser.h"
#include "engine/tokenizer/tool_call_parser.h"
#include "server/stream_reactor.h"

namespace dsv3::server {

class ChatReactor final : public StreamReactor<v1::ChatResponse> {
 public:
  ChatReactor(ServingState& state, grpc::CallbackServerContext* context,
              const v1::ChatRequest& request);

 private:
  bool Fill(int index, OutputDelta& delta, v1::ChatResponse& response) override;

  bool return_token_ids_ = false;
  // One per choice, of one kind: R1 output is split into reasoning and content, V3 output into
  // content and tool calls.
  std::vector<ReasoningParser> reasoning_;
  std::vector<ToolCallParser> tools_;
};

}  // namespace dsv3::server
