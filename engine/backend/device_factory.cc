#include <iostream>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/backend/device.h"

namespace brickserve {

absl::StatusOr<std::unique_ptr<Device>> CreateDevice(const DeviceOptions& options) {
  if (options.kind == "cpu") return std::unique_ptr<Device>(new CpuDevice(options.threads, options.batch_invariant));
  if (options.kind == "auto") {
    // The CUDA backend arrives with the GPU issue; until then auto means CPU.
    std::clog << "brickserve: device auto: no CUDA backend in this build, using the CPU\n";
    return std::unique_ptr<Device>(new CpuDevice(options.threads, options.batch_invariant));
  }
  if (options.kind == "cuda") {
    return absl::UnimplementedError("device \"cuda\": this build has no CUDA backend yet (use cpu or auto)");
  }
  return absl::InvalidArgumentError(absl::StrCat("device \"", options.kind, "\" is unknown (use cpu, cuda or auto)"));
}

}  // namespace brickserve
