// Reader for the safetensors format: an 8-byte little-endian header length, a JSON header of
// {name: {dtype, shape, data_offsets}}, then the raw tensor bytes. Tensors are used in place from a
// read-only memory mapping. Every offset and shape is checked against the file before use.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/util/mapped_file.h"

namespace brickserve {

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::map<std::string, HostTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, HostTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint: one file, or shards listed by model.safetensors.index.json.
class CheckpointTensors {
 public:
  // `model_dir` holds model.safetensors, or model.safetensors.index.json and its shards.
  static absl::StatusOr<CheckpointTensors> Open(const std::string& model_dir);

  // Returns the tensor or NOT_FOUND naming it.
  absl::StatusOr<HostTensor> Get(const std::string& name) const;
  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }
  const std::map<std::string, HostTensor>& all() const { return tensors_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, HostTensor> tensors_;
};

// Writes `tensors` (host data, in name order) and string `metadata` as one safetensors file.
absl::Status WriteSafetensors(const std::string& path, const std::map<std::string, HostTensor>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace brickserve
