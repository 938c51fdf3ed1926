// The CUDA backend lives in a plugin, libbrickserve_cuda.so, opened with dlopen when a CUDA device
// is asked for. The brickserve binary then links no CUDA library: it starts on machines without
// them (device auto falls back to the CPU), and the CUDA libraries' thread-local storage (cuBLASLt
// alone has ~100 KiB) stays out of the static TLS of every thread, which threads with small
// stacks (civetweb's) cannot afford.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"

namespace brickserve {

// Bumped whenever Device, DeviceOptions or the entry point change shape: a plugin from another
// build is refused rather than called with the wrong layout.
inline constexpr int kCudaPluginAbi = 1;

// The plugin's entry points (C linkage, so dlsym finds them by these names).
using CudaPluginAbiFn = int (*)();
using CudaPluginCreateFn = void (*)(const DeviceOptions* options, absl::StatusOr<std::unique_ptr<Device>>* out);
inline constexpr const char* kCudaPluginAbiSymbol = "brickserve_cuda_plugin_abi";
inline constexpr const char* kCudaPluginCreateSymbol = "brickserve_cuda_create_device";
inline constexpr const char* kCudaPluginFile = "libbrickserve_cuda.so";

// Opens the plugin (env BRICKSERVE_CUDA_PLUGIN, else next to the executable, else the build tree,
// else the loader's search path) and creates the device. FAILED_PRECONDITION when there is no
// plugin or no usable GPU.
absl::StatusOr<std::unique_ptr<Device>> CreateCudaDevice(const DeviceOptions& options);

}  // namespace brickserve
