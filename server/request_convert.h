// Between the wire (brickserve.v1 messages) and the engine (GenerationRequest/Result): request
// validation with field-naming errors, and filling responses. No gRPC here, only absl::Status.
#pragma once

#include "absl/status/statusor.h"
#include "brickserve/v1/inference.pb.h"
#include "bricks/registry.h"
#include "engine/engine.h"
#include "server/config.h"

namespace brickserve {

// Builds the engine request, or returns INVALID_ARGUMENT naming the field and its limit,
// NOT_FOUND for a brick that is not loaded, FAILED_PRECONDITION for a sparse router policy on a
// server without a module set.
// The named bricks are resolved in `bricks` (null: none loaded) and attached with their weights;
// the request holds them until it ends. Runs the engine's own checks (Engine::Validate) last.
// `applied`, when given, receives the bricks attached (name, version, weight) for the response.
absl::StatusOr<GenerationRequest> ToEngineRequest(const v1::GenerateRequest& request, const Engine& engine,
                                                  const Limits& limits, BrickRegistry* bricks = nullptr,
                                                  std::vector<v1::AppliedBrick>* applied = nullptr);

// GenerateRequest.priority is in [-kMaxPriority, kMaxPriority].
inline constexpr int kMaxPriority = 1000;

// A brick weight's bound, either sign (a negative weight subtracts an adapter).
inline constexpr float kMaxBrickWeight = 10.0f;

// Brick names, weights and router policy: INVALID_ARGUMENT / UNIMPLEMENTED naming the field.
absl::Status CheckBricksAndRouter(const v1::GenerateRequest& request, const Limits& limits);

// Ids must be in [0, vocab_size); `field` names them in the error.
absl::Status CheckTokenIds(std::span<const int32_t> ids, int vocab_size, const char* field);

// Well-formed UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
bool IsValidUtf8(std::string_view s);

v1::FinishReason ToProto(FinishReason reason);
void FillToken(const GeneratedToken& token, bool with_logprobs, v1::Token* out);
void FillUsage(const GenerationResult& result, v1::Usage* out);
// The wire router policy; POLICY_UNSPECIFIED takes `server_default`. Ranges are the engine's check.
absl::StatusOr<RouterPolicy> ToRouterPolicy(const v1::RouterPolicy& in, const RouterPolicy& server_default);
// A module trace or the server's usage counters on the wire.
void FillModuleUsage(const ModuleTrace& trace, const std::string& policy, v1::ModuleUsage* out);
ModuleTrace ModuleTraceFromProto(const v1::ModuleUsage& usage);
void ToProto(const RouterPolicy& policy, v1::RouterPolicy* out);
void FillResponse(const GenerationResult& result, bool with_logprobs, v1::GenerateResponse* out);
// The streamed piece; `with_logprobs` as the request asked.
void FillPiece(const StreamPiece& piece, bool with_logprobs, v1::GeneratePiece* out);
void FillFinal(const GenerationResult& result, v1::GenerateFinal* out);

}  // namespace brickserve
