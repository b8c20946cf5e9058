#include "server/chat_reactor.h"

#include "server/generate_reactor.h"
#include "server/validation.h"

namespace dsv3::server {

ChatReactor::ChatReactor(ServingState& state, grpc::CallbackServerContext* context,
                         const v1::ChatRequest& request)
    : StreamReactor(state, context, "Chat") {
  if (!AdmitAndName(request.request_id())) return;
  const LoadedModel& model = state_.model();
  auto call = BuildChatCall(request, model.limits(), model.tokenizer.get());
  if (!call.ok()) {
    Reject(ToGrpcStatus(call.status()));
    return;
  }
  return_token_ids_ = call->return_token_ids;
  if (call->chat_template == ChatTemplate::kR1) {
    reasoning_.assign(call->n, ReasoningParser(call->prompt_opened_think));
  } else {
    tools_.assign(call->n, ToolCallParser());
  }
  Submit(std::move(call->request), call->n);
}

bool ChatReactor::Fill(int index, OutputDelta& delta, v1::ChatResponse& response) {
  if (return_token_ids_) {
    response.mutable_token_ids()->Add(delta.token_ids.begin(), delta.token_ids.end());
  }
  AddLogprobs(delta, state_.model().tokenizer.get(), response);
  if (!reasoning_.empty()) {
    ReasoningParser& reasoning = reasoning_[index];
    ReasoningParser::Delta d = reasoning.Push(delta.text);
    if (delta.finished()) {
      ReasoningParser::Delta rest = reasoning.Flush();
      d.reasoning += rest.reasoning;
      d.content += rest.content;
    }
    response.set_reasoning_content(std::move(d.reasoning));
    response.set_content(std::move(d.content));
  } else {
    ToolCallParser& tools = tools_[index];
    ToolCallParser::Delta d = tools.Push(delta.text);
    if (delta.finished()) {
      ToolCallParser::Delta rest = tools.Flush();
      d.content += rest.content;
      for (ToolCall& call : rest.tool_calls) d.tool_calls.push_back(std::move(call));
    }
    response.set_content(std::move(d.content));
    for (const ToolCall& call : d.tool_calls) {
      v1::ToolCall* out = response.add_tool_calls();
      out->set_type(call.type);
      out->set_name(call.name);
      out->set_arguments(call.arguments);
    }
  }
  return response.token_ids_size() > 0 || !response.content().empty() ||
         !response.reasoning_content().empty() || response.tool_calls_size() > 0 ||
         response.logprobs_size() > 0;
}

}  // namespace dsv3::server
