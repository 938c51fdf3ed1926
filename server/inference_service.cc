#include "server/inference_service.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/request_convert.h"
#include "server/status_mapping.h"
#include "server/wire.h"

namespace brickserve {
namespace {

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const absl::Status& status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return StartGenerate(deps_, context, request, response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::GenerateStream(grpc::CallbackServerContext* context,
                                                                             const grpc::ByteBuffer* request) {
  return StartGenerateStream(deps_, context, request);
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request_bytes,
                                                     grpc::ByteBuffer* response_bytes) {
  v1::TokenizeRequest request;
  if (absl::Status s = ParseRequest(*request_bytes, &request); !s.ok()) return Answer(context, s);
  // Encoding is fast and the tokenizer immutable: this runs right here, without the engine's lock.
  const Tokenizer& tok = deps_.engine->tokenizer();
  const bool special = !request.has_add_special_tokens() || request.add_special_tokens();
  v1::TokenizeResponse response;
  for (int32_t id : tok.Encode(request.text(), special)) {
    response.add_ids(id);
    response.add_tokens(std::string(tok.token_string(id)));
  }
  return Answer(context, SerializeResponse(response, response_bytes));
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  const std::span<const int32_t> ids(request->ids().data(), request->ids().size());
  if (absl::Status s = CheckTokenIds(ids, deps_.engine->config().vocab_size, "ids"); !s.ok()) {
    return Answer(context, s);
  }
  response->set_text(deps_.engine->tokenizer().Decode(ids, request->skip_special_tokens()));
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*,
                                                         v1::GetModelInfoResponse* response) {
  const Engine& e = *deps_.engine;
  const EngineInfo& info = e.info();
  response->set_model(std::filesystem::path(info.model_dir).lexically_normal().filename().string());
  if (response->model().empty()) {  // "dir/" has an empty filename
    response->set_model(std::filesystem::path(info.model_dir).lexically_normal().parent_path().filename().string());
  }
  response->set_architecture(info.architecture);
  response->set_device(info.device);
  response->set_vocab_size(info.vocab_size);
  response->set_max_context(info.max_context);
  response->set_num_layers(info.num_layers);
  response->set_hidden_size(info.hidden_size);
  if (info.bos_id) response->set_bos_token_id(*info.bos_id);
  for (int32_t id : info.eos_ids) response->add_eos_token_ids(id);
  response->set_weight_bytes(info.weight_bytes);
  response->set_kv_cache_bytes(info.kv_cache_bytes);
  const Limits& l = deps_.limits;
  auto* limits = response->mutable_limits();
  limits->set_max_new_tokens(l.max_new_tokens);
  limits->set_default_max_new_tokens(l.default_max_new_tokens);
  limits->set_max_prompt_tokens(l.max_prompt_tokens);
  limits->set_max_stop_strings(l.max_stop_strings);
  limits->set_max_stop_string_bytes(l.max_stop_string_bytes);
  limits->set_max_top_logprobs(l.max_top_logprobs);
  limits->set_max_queued_requests(l.max_queued_requests);
  limits->set_max_bricks_per_request(l.max_bricks_per_request);
  if (deps_.bricks != nullptr) {
    for (const BrickStatus& b : deps_.bricks->List()) response->add_bricks(b.name);
  }
  response->add_router_policies(v1::RouterPolicy::POLICY_DENSE);
  if (e.modules() != nullptr) {
    response->add_router_policies(v1::RouterPolicy::POLICY_TOP_K);
    response->add_router_policies(v1::RouterPolicy::POLICY_DENSITY);
    response->set_num_modules(e.modules()->num_modules);
  }
  ToProto(l.default_router, response->mutable_default_router());
  response->set_server_version(BRICKSERVE_VERSION);
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::GetServerStats(grpc::CallbackServerContext* context,
                                                           const v1::GetServerStatsRequest*,
                                                           v1::GetServerStatsResponse* response) {
  deps_.stats->Fill(response);
  const EngineStats e = deps_.engine->Stats();
  response->set_queued_requests(e.queued_requests);
  response->set_running_requests(e.running_requests);
  response->set_queued_prompt_tokens(e.queued_prompt_tokens);
  response->set_preemptions(static_cast<int64_t>(e.preemptions));
  response->set_kv_blocks_total(e.kv_blocks_total);
  response->set_kv_blocks_in_use(e.kv_blocks_in_use);
  response->set_kv_blocks_cached(e.kv_blocks_cached);
  response->set_kv_block_size(e.kv_block_size);
  response->set_prompt_tokens(static_cast<int64_t>(e.prompt_tokens));
  response->set_prefix_cache_hit_tokens(static_cast<int64_t>(e.prefix_cache_hit_tokens));
  response->set_time_to_first_token_p50_s(e.time_to_first_token.Quantile(0.5));
  response->set_time_to_first_token_p99_s(e.time_to_first_token.Quantile(0.99));
  response->set_inter_token_latency_p50_s(e.inter_token_latency.Quantile(0.5));
  response->set_inter_token_latency_p99_s(e.inter_token_latency.Quantile(0.99));
  if (!e.module_usage.empty()) FillModuleUsage(e.module_usage, "", response->mutable_module_usage());
  return Answer(context, absl::OkStatus());
}

}  // namespace brickserve
