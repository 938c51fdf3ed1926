// Request parsing and response serialisation for the methods the service handles as raw bytes.
// Why raw: protobuf refuses a whole message whose `string` field is not UTF-8, and gRPC then fails
// the call with a bare UNIMPLEMENTED. Parsing here turns that into INVALID_ARGUMENT naming the field
// ("stop[1] is not valid UTF-8").
#pragma once

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace brickserve {

absl::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* out);
absl::Status SerializeResponse(const google::protobuf::Message& message, grpc::ByteBuffer* out);

}  // namespace brickserve
