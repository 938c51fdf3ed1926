// The reactors of Generate and GenerateStream (gRPC callback API). A call holds no thread while it
// waits: validation happens on the gRPC thread, generation on the engine's scheduler thread (which
// batches it with the other requests), and the stream's writes are started from whichever thread
// has the next piece, one in flight at a time.
#pragma once

#include "brickserve/v1/inference.grpc.pb.h"
#include "bricks/registry.h"
#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "server/config.h"
#include "server/request_stats.h"

namespace brickserve {

// What the calls need; outlives every call (the server shuts down before it goes away).
struct ServiceDeps {
  Engine* engine = nullptr;
  Limits limits;
  RequestStats* stats = nullptr;
  BrickRegistry* bricks = nullptr;  // resolves the bricks a request names
};

// Requests arrive and responses leave as serialised v1.GenerateRequest / v1.GenerateResponse /
// v1.GenerateStreamResponse bytes (see wire.h for why).
grpc::ServerUnaryReactor* StartGenerate(const ServiceDeps& deps, grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request, grpc::ByteBuffer* response);

grpc::ServerWriteReactor<grpc::ByteBuffer>* StartGenerateStream(const ServiceDeps& deps,
                                                                grpc::CallbackServerContext* context,
                                                                const grpc::ByteBuffer* request);

}  // namespace brickserve
