// dsv3.v1.Inference on gRPC's callback API: the streaming methods get one reactor per call
// (generate_reactor.h, chat_reactor.h); the unary ones answer inline, as they never wait.
#pragma once

#include "dsv3/v1/inference.grpc.pb.h"
#include "server/serving_state.h"

namespace dsv3::server {

class InferenceService final : public v1::Inference::CallbackService {
 public:
  explicit InferenceService(ServingState& state) : state_(state) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::ChatResponse>* Chat(grpc::CallbackServerContext* context,
                                                   const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  // Finishes a unary call with `status`, counting it in the metrics.
  grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context, const char* method,
                                 const grpc::Status& status);

  ServingState& state_;
};

// The ModelInfo of a loaded model (also used by the daemon's startup log).
v1::ModelInfo DescribeModel(const LoadedModel& model);

}  // namespace dsv3::server
