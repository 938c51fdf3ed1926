// The one absl -> gRPC status mapping: every canonical code keeps its name and the message.
#include "server/status_mapping.h"

#include <string>

#include "gtest/gtest.h"

namespace brickserve {
namespace {

TEST(StatusMapping, OkIsOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(StatusMapping, EveryCanonicalCodeKeepsItsNameAndMessage) {
  for (int code = 1; code <= 16; ++code) {
    const absl::Status in(static_cast<absl::StatusCode>(code), "what happened");
    const grpc::Status out = ToGrpcStatus(in);
    // Names match one to one (absl's "INVALID_ARGUMENT" == gRPC's INVALID_ARGUMENT).
    EXPECT_EQ(GrpcCodeName(out.error_code()), absl::StatusCodeToString(in.code())) << code;
    EXPECT_EQ(out.error_message(), "what happened") << code;
    const absl::Status back = FromGrpcStatus(out);
    EXPECT_EQ(back, in) << code;
  }
}

TEST(StatusMapping, EngineErrorsUsedByTheServer) {
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("max_new_tokens = 0")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("brick \"x\" is not loaded")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::UnimplementedError("router")).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("queue")).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::InternalError("device")).error_code(), grpc::StatusCode::INTERNAL);
}

TEST(StatusMapping, NonCanonicalAbslCodeBecomesUnknown) {
  const grpc::Status out = ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(42), "odd"));
  EXPECT_EQ(out.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(out.error_message(), "odd");
}

TEST(StatusMapping, UnknownGrpcCodeBecomesUnknown) {
  const absl::Status out = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd"));
  EXPECT_EQ(out.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(out.message(), "odd");
}

}  // namespace
}  // namespace brickserve
