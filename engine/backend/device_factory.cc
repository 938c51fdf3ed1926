#include <iostream>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/backend/cuda_plugin.h"
#include "engine/backend/device.h"

namespace brickserve {

absl::StatusOr<std::unique_ptr<Device>> CreateDevice(const DeviceOptions& options) {
  if (options.kind == "cpu") return std::unique_ptr<Device>(new CpuDevice(options.threads, options.batch_invariant));
  if (options.kind == "cuda") return CreateCudaDevice(options);
  if (options.kind == "auto") {
    absl::StatusOr<std::unique_ptr<Device>> gpu = CreateCudaDevice(options);
    if (gpu.ok()) return gpu;
    std::clog << "brickserve: device auto: " << gpu.status().message() << "; using the CPU\n";
    return std::unique_ptr<Device>(new CpuDevice(options.threads, options.batch_invariant));
  }
  return absl::InvalidArgumentError(absl::StrCat("device \"", options.kind, "\" is unknown (use cpu, cuda or auto)"));
}

}  // namespace brickserve
