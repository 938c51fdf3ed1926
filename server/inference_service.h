// brickserve.v1.InferenceService on the gRPC callback API. Generation goes through the reactors in
// generate_reactors.h; the small calls (tokenize, info, stats) answer inline on the gRPC thread.
// The methods whose requests carry text take raw bytes, so that a request with non-UTF-8 text is
// INVALID_ARGUMENT naming the field (wire.h); the others are typed.
#pragma once

#include "brickserve/v1/inference.grpc.pb.h"
#include "server/generate_reactors.h"

namespace brickserve {

using InferenceServiceBase = v1::InferenceService::WithRawCallbackMethod_Generate<
    v1::InferenceService::WithRawCallbackMethod_GenerateStream<
        v1::InferenceService::WithRawCallbackMethod_Tokenize<v1::InferenceService::CallbackService>>>;

class InferenceService final : public InferenceServiceBase {
 public:
  explicit InferenceService(const ServiceDeps& deps) : deps_(deps) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(grpc::CallbackServerContext* context,
                                                             const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context, const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::GetModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* GetServerStats(grpc::CallbackServerContext* context,
                                           const v1::GetServerStatsRequest* request,
                                           v1::GetServerStatsResponse* response) override;

 private:
  const ServiceDeps deps_;
};

}  // namespace brickserve
