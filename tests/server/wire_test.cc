// Raw request parsing: a string field that is not UTF-8 is reported by name, not as a bare failure.
#include "server/wire.h"

#include "brickserve/v1/inference.pb.h"
#include "gtest/gtest.h"
#include "server/request_convert.h"

namespace brickserve {
namespace {

grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

// Serialises `r` even when a string is not UTF-8 (protobuf only logs that while serialising),
// which is what a non-conforming client would send.
grpc::ByteBuffer Wire(const v1::GenerateRequest& r) { return Bytes(r.SerializeAsString()); }

TEST(Utf8, AcceptsWellFormedAndRefusesMalformed) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii\n"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80"));  // 2, 3, 4 bytes
  EXPECT_FALSE(IsValidUtf8("caf\xE9"));              // Latin-1
  EXPECT_FALSE(IsValidUtf8("\xC3"));                 // truncated
  EXPECT_FALSE(IsValidUtf8("\xC3\x28"));             // bad continuation
  EXPECT_FALSE(IsValidUtf8("\x80"));                 // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));             // overlong NUL
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));         // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));         // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));     // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(Wire, ParsesAValidRequest) {
  v1::GenerateRequest r;
  r.set_text("The kernel");
  r.add_stop("\n");
  r.set_max_new_tokens(5);
  v1::GenerateRequest out;
  ASSERT_TRUE(ParseRequest(Wire(r), &out).ok());
  EXPECT_EQ(out.text(), "The kernel");
  EXPECT_EQ(out.max_new_tokens(), 5);
}

TEST(Wire, NamesTheStringFieldThatIsNotUtf8) {
  v1::GenerateRequest r;
  r.set_text("fine");
  r.add_stop("ok");
  r.add_stop("\xC3\x28");
  v1::GenerateRequest out;
  absl::Status s = ParseRequest(Wire(r), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "stop[1] is not valid UTF-8");

  r.clear_stop();
  r.set_text("caf\xE9");
  EXPECT_EQ(ParseRequest(Wire(r), &out).message(), "text is not valid UTF-8");

  r.set_text("fine");
  r.add_bricks("a");
  r.add_bricks("b\xFF");
  EXPECT_EQ(ParseRequest(Wire(r), &out).message(), "bricks[1] is not valid UTF-8");
}

TEST(Wire, GarbageIsInvalidArgument) {
  v1::GenerateRequest out;
  absl::Status s = ParseRequest(Bytes("\xFF\xFF\xFF"), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "the request is not a valid brickserve.v1.GenerateRequest");
}

TEST(Wire, SerialisesResponses) {
  v1::GenerateResponse resp;
  resp.set_text("out");
  resp.add_tokens()->set_id(7);
  grpc::ByteBuffer bytes;
  ASSERT_TRUE(SerializeResponse(resp, &bytes).ok());
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(bytes.Dump(&slices).ok());
  std::string flat;
  for (const auto& s : slices) flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
  v1::GenerateResponse back;
  ASSERT_TRUE(back.ParseFromString(flat));
  EXPECT_EQ(back.text(), "out");
  EXPECT_EQ(back.tokens(0).id(), 7);
}

}  // namespace
}  // namespace brickserve
