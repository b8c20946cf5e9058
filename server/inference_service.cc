#include "server/inference_service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "server/chat_reactor.h"
#include "server/generate_reactor.h"
#include "server/status_util.h"
#include "server/validation.h"

namespace dsv3::server {
namespace {

grpc::Status NoTokenizer() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "this server has no tokenizer (its model directory holds no "
                      "tokenizer.json)");
}

}  // namespace

v1::ModelInfo DescribeModel(const LoadedModel& model) {
  const ModelConfig& c = model.model->config();
  v1::ModelInfo info;
  info.set_model_path(model.model_dir);
  v1::ArchitectureSummary* a = info.mutable_architecture();
  a->set_model_type(c.model_type);
  a->set_vocab_size(c.vocab_size);
  a->set_hidden_size(c.hidden_size);
  a->set_num_hidden_layers(c.num_hidden_layers);
  a->set_first_k_dense_replace(c.first_k_dense_replace);
  a->set_num_attention_heads(c.num_attention_heads);
  a->set_q_lora_rank(c.q_lora_rank.value_or(0));
  a->set_kv_lora_rank(c.kv_lora_rank);
  a->set_qk_nope_head_dim(c.qk_nope_head_dim);
  a->set_qk_rope_head_dim(c.qk_rope_head_dim);
  a->set_v_head_dim(c.v_head_dim);
  a->set_n_routed_experts(c.n_routed_experts);
  a->set_n_shared_experts(c.n_shared_experts);
  a->set_num_experts_per_tok(c.num_experts_per_tok);
  a->set_max_position_embeddings(c.max_position_embeddings);
  a->set_weight_format(c.quantization && c.quantization->fp8 ? "fp8" : "bf16");
  const EngineStats stats = model.engine->Stats();
  info.set_max_context_tokens(model.engine->max_context());
  info.set_kv_block_size(model.engine->config().block_size);
  info.set_kv_capacity_blocks(stats.kv_blocks_total);
  info.set_kv_capacity_tokens(stats.kv_blocks_total * model.engine->config().block_size);
  info.set_tensor_parallel_size(model.tensor_parallel_size);
  info.set_is_smoke_model(model.is_smoke_model);
  info.set_has_tokenizer(model.tokenizer != nullptr);
  info.set_backend(model.backend->name());
  info.set_server_version(DSV3_VERSION);
  info.set_api_version("dsv3.v1");
  info.set_grpc_version(grpc::Version());
  return info;
}

grpc::ServerUnaryReactor* InferenceService::Done(grpc::CallbackServerContext* context,
                                                 const char* method, const grpc::Status& status) {
  state_.metrics().RecordCall(method, status.error_code());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return new GenerateReactor(state_, context, *request);
}

grpc::ServerWriteReactor<v1::ChatResponse>* InferenceService::Chat(
    grpc::CallbackServerContext* context, const v1::ChatRequest* request) {
  return new ChatReactor(state_, context, *request);
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  if (grpc::Status st = state_.Admit(*context); !st.ok()) return Done(context, "Tokenize", st);
  const Tokenizer* tokenizer = state_.model().tokenizer.get();
  if (tokenizer == nullptr) return Done(context, "Tokenize", NoTokenizer());
  if (absl::Status st = CheckTokenizeSize(request->text().size(), state_.model().limits(), "text");
      !st.ok()) {
    return Done(context, "Tokenize", ToGrpcStatus(st));
  }
  if (absl::Status st = CheckUtf8(request->text(), "text"); !st.ok()) {
    return Done(context, "Tokenize", ToGrpcStatus(st));
  }
  if (request->add_bos_token() && tokenizer->bos_id() >= 0) {
    response->add_token_ids(tokenizer->bos_id());
  }
  for (int32_t id : tokenizer->Encode(request->text())) response->add_token_ids(id);
  return Done(context, "Tokenize", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  if (grpc::Status st = state_.Admit(*context); !st.ok()) return Done(context, "Detokenize", st);
  const LoadedModel& model = state_.model();
  const Tokenizer* tokenizer = model.tokenizer.get();
  if (tokenizer == nullptr) return Done(context, "Detokenize", NoTokenizer());
  // The ids Generate accepts and can sample: the model's vocabulary, which may be larger than
  // the tokenizer's (DeepSeek-V3: 129280 rows, 128815 tokens). Ids the tokenizer does not know
  // decode to no text, as in generated text.
  const std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  const int64_t vocab_size = model.limits().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Done(context, "Detokenize",
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               absl::StrCat("token_ids[", i, "] = ", ids[i],
                                            " is outside the vocabulary [0, ", vocab_size, ")")));
    }
  }
  response->set_text(tokenizer->Decode(ids, request->skip_special_tokens()));
  return Done(context, "Detokenize", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*,
                                                         v1::ModelInfo* response) {
  if (grpc::Status st = state_.Admit(*context); !st.ok()) {
    return Done(context, "GetModelInfo", st);
  }
  *response = DescribeModel(state_.model());
  return Done(context, "GetModelInfo", grpc::Status::OK);
}

}  // namespace dsv3::server
