#include "engine/model/safetensors.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Header larger than this is not a plausible safetensors file (the reference reader uses 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

absl::StatusOr<DType> ParseDType(const std::string& s, const std::string& where) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  if (s == "I32") return DType::kI32;  // index tensors (module sets)
  return absl::InvalidArgumentError(absl::StrCat(where, ": dtype \"", s,
                                                 "\" is not supported (supported: F32, F16, BF16, I32)"));
}

absl::Status ParseTensorEntry(const std::string& name, const json& entry, const std::byte* body,
                              uint64_t body_size, const std::string& path,
                              std::shared_ptr<const void> keep_alive, HostTensor* out) {
  const std::string where = absl::StrCat(path, ": tensor \"", name, "\"");
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
      !entry.contains("data_offsets") || !entry["dtype"].is_string() || !entry["shape"].is_array() ||
      !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": header entry needs dtype, shape and data_offsets [begin, end]"));
  }
  BS_ASSIGN_OR_RETURN(out->dtype, ParseDType(entry["dtype"].get<std::string>(), where));
  uint64_t elements = 1;
  for (const auto& d : entry["shape"]) {
    if (!d.is_number_unsigned()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": shape entries must be non-negative integers"));
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && elements > (uint64_t{1} << 48) / dim) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": shape is implausibly large"));
    }
    elements *= dim;
    out->shape.push_back(static_cast<int64_t>(dim));
  }
  const auto& offs = entry["data_offsets"];
  if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": data_offsets must be non-negative integers"));
  }
  const uint64_t begin = offs[0].get<uint64_t>();
  const uint64_t end = offs[1].get<uint64_t>();
  const uint64_t want = elements * DTypeSize(out->dtype);
  if (end < begin || end - begin != want) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": data_offsets [", begin, ", ", end,
                                                   ") hold ", end - begin, " bytes but shape [",
                                                   absl::StrJoin(out->shape, ", "), "] of ",
                                                   DTypeName(out->dtype), " needs ", want));
  }
  if (end > body_size) {
    return absl::DataLossError(absl::StrCat(where, ": data ends at byte ", end, " of the data section but the file holds only ",
                                            body_size, " bytes (truncated file?)"));
  }
  if (begin % DTypeSize(out->dtype) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": data offset ", begin, " is not aligned to its element size"));
  }
  out->data = body + begin;
  out->keep_alive = std::move(keep_alive);
  out->file_mapped = true;  // MappedFile: PROT_READ, MAP_PRIVATE
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto result = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  BS_ASSIGN_OR_RETURN(result->file_, MappedFile::Open(path));
  const auto& file = *result->file_;
  if (file.size() < 8) {
    return absl::DataLossError(absl::StrCat(path, ": ", file.size(),
                                            " bytes is too short for a safetensors file (truncated?)"));
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);  // little-endian on every platform we build for
  if (header_len > kMaxHeaderBytes || header_len > file.size() - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_len, " exceeds the file size ",
                                            file.size(), " (truncated or not a safetensors file)"));
  }
  const char* header_begin = reinterpret_cast<const char*>(file.data() + 8);
  json header = json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": header is not a JSON object"));
  }
  const std::byte* body = file.data() + 8 + header_len;
  const uint64_t body_size = file.size() - 8 - header_len;
  std::shared_ptr<const void> keep_alive = result->file_;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_object()) {
        for (const auto& [k, v] : entry.items()) {
          if (v.is_string()) result->metadata_[k] = v.get<std::string>();
        }
      }
      continue;
    }
    HostTensor tensor;
    BS_RETURN_IF_ERROR(ParseTensorEntry(name, entry, body, body_size, path, keep_alive, &tensor));
    result->tensors_.emplace(name, std::move(tensor));
  }
  return result;
}

absl::StatusOr<CheckpointTensors> CheckpointTensors::Open(const std::string& model_dir) {
  CheckpointTensors ckpt;
  const fs::path dir(model_dir);
  const fs::path index_path = dir / "model.safetensors.index.json";
  const fs::path single_path = dir / "model.safetensors";
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index_path)) {
    auto mapped = MappedFile::Open(index_path.string());
    if (!mapped.ok()) return mapped.status();
    const char* p = reinterpret_cast<const char*>((*mapped)->data());
    json index = json::parse(p, p + (*mapped)->size(), nullptr, false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": needs an object field \"weight_map\""));
    }
    std::set<std::string> seen;
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map[\"", name, "\"] must be a file name"));
      }
      const std::string shard_name = shard.get<std::string>();
      if (shard_name.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": shard name \"", shard_name,
                                                       "\" must be a plain file name in the model directory"));
      }
      weight_map[name] = shard_name;
      if (seen.insert(shard_name).second) shard_names.push_back(shard_name);
    }
  } else if (fs::exists(single_path)) {
    shard_names.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(model_dir, ": no model.safetensors or model.safetensors.index.json"
                                            " (only safetensors checkpoints are supported)"));
  }
  for (const auto& shard : shard_names) {
    BS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open((dir / shard).string()));
    for (const auto& [name, tensor] : file->tensors()) {
      if (!weight_map.empty()) {
        auto it = weight_map.find(name);
        if (it == weight_map.end() || it->second != shard) continue;  // the index decides the owner
      }
      if (!ckpt.tensors_.emplace(name, tensor).second) {
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" appears in more than one shard"));
      }
    }
    ckpt.files_.push_back(std::move(file));
  }
  for (const auto& [name, shard] : weight_map) {
    if (!ckpt.tensors_.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("model.safetensors.index.json maps \"", name,
                                                     "\" to ", shard, ", which does not contain it"));
    }
  }
  return ckpt;
}

absl::Status WriteSafetensors(const std::string& path, const std::map<std::string, HostTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    uint64_t bytes = DTypeSize(t.dtype);
    for (int64_t d : t.shape) bytes *= static_cast<uint64_t>(d);
    header[name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  // Written beside the target and renamed, so a reader never sees half a file.
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
  const uint64_t len = text.size();
  bool ok = std::fwrite(&len, 8, 1, f) == 1 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const auto& [name, t] : tensors) {
    size_t bytes = DTypeSize(t.dtype);
    for (int64_t d : t.shape) bytes *= static_cast<size_t>(d);
    ok = ok && (bytes == 0 || std::fwrite(t.data, 1, bytes, f) == bytes);
  }
  ok = (std::fclose(f) == 0) && ok;
  std::error_code ec;
  if (ok) fs::rename(tmp, path, ec);
  if (!ok || ec) {
    fs::remove(tmp, ec);
    return absl::InternalError(absl::StrCat("writing ", path, " failed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<HostTensor> CheckpointTensors::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat("checkpoint has no tensor \"", name, "\""));
  return it->second;
}

}  // namespace brickserve
