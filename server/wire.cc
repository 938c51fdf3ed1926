#include "server/wire.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"
#include "server/request_convert.h"

namespace brickserve {
namespace {

// The path ("stop[1]", "router.name") of the first string field under `type` in `bytes` that is
// not UTF-8. The bytes are read as an UnknownFieldSet, which does not check UTF-8.
std::optional<std::string> FindInvalidUtf8(const std::string& bytes, const google::protobuf::Descriptor& type,
                                           const std::string& prefix) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(bytes)) return std::nullopt;
  std::map<int, int> seen;  // occurrences per field number: the index of a repeated field
  for (int i = 0; i < fields.field_count(); ++i) {
    const auto& f = fields.field(i);
    if (f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const google::protobuf::FieldDescriptor* fd = type.FindFieldByNumber(f.number());
    if (fd == nullptr) continue;
    const int index = seen[f.number()]++;
    const std::string path = absl::StrCat(prefix, fd->name(), fd->is_repeated() ? absl::StrCat("[", index, "]") : "");
    if (fd->type() == google::protobuf::FieldDescriptor::TYPE_STRING && !IsValidUtf8(f.length_delimited())) {
      return path;
    }
    if (fd->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
      if (auto inner = FindInvalidUtf8(f.length_delimited(), *fd->message_type(), path + ".")) return inner;
    }
  }
  return std::nullopt;
}

}  // namespace

absl::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* out) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return absl::InvalidArgumentError("the request could not be read");
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (out->ParseFromString(bytes)) return absl::OkStatus();
  if (auto field = FindInvalidUtf8(bytes, *out->GetDescriptor(), "")) {
    return absl::InvalidArgumentError(absl::StrCat(*field, " is not valid UTF-8"));
  }
  return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ", out->GetTypeName()));
}

absl::Status SerializeResponse(const google::protobuf::Message& message, grpc::ByteBuffer* out) {
  std::string bytes;
  if (!message.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("cannot serialise ", message.GetTypeName()));
  }
  grpc::Slice slice(std::move(bytes));
  *out = grpc::ByteBuffer(&slice, 1);
  return absl::OkStatus();
}

}  // namespace brickserve
