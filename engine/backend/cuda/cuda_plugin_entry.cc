// The entry points of libbrickserve_cuda.so (see engine/backend/cuda_plugin.h).
#include "engine/backend/cuda/cuda_device.h"
#include "engine/backend/cuda_plugin.h"

extern "C" {

int brickserve_cuda_plugin_abi() { return brickserve::kCudaPluginAbi; }

void brickserve_cuda_create_device(const brickserve::DeviceOptions* options,
                                   absl::StatusOr<std::unique_ptr<brickserve::Device>>* out) {
  absl::StatusOr<std::unique_ptr<brickserve::CudaDevice>> d = brickserve::CudaDevice::Create(*options);
  if (!d.ok()) {
    *out = d.status();
    return;
  }
  *out = std::unique_ptr<brickserve::Device>(std::move(*d));
}

}  // extern "C"
