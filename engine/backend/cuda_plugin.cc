#include "engine/backend/cuda_plugin.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace brickserve {
namespace {

struct Plugin {
  CudaPluginCreateFn create = nullptr;
  absl::Status error;
};

std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("BRICKSERVE_CUDA_PLUGIN"); env != nullptr && *env != '\0') {
    paths.push_back(env);
    return paths;  // an explicit choice is the only one tried
  }
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) paths.push_back((exe.parent_path() / kCudaPluginFile).string());
#ifdef BRICKSERVE_CUDA_PLUGIN_PATH
  paths.push_back(BRICKSERVE_CUDA_PLUGIN_PATH);
#endif
  paths.push_back(kCudaPluginFile);  // LD_LIBRARY_PATH and the system directories
  return paths;
}

Plugin Open() {
  Plugin p;
#ifndef BRICKSERVE_HAVE_CUDA
  p.error = absl::FailedPreconditionError(
      "device \"cuda\": this build has no CUDA backend (configure with -DBRICKSERVE_CUDA=ON on a machine with nvcc)");
#else
  std::vector<std::string> tried;
  for (const std::string& path : Candidates()) {
    // A bare file name goes through the loader's search; a path must exist to be worth a try.
    if (path.find('/') != std::string::npos && !std::filesystem::exists(path)) {
      tried.push_back(absl::StrCat(path, ": no such file"));
      continue;
    }
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* err = dlerror();
      tried.push_back(absl::StrCat(path, ": ", err != nullptr ? err : "not loadable"));
      continue;
    }
    auto abi = reinterpret_cast<CudaPluginAbiFn>(dlsym(lib, kCudaPluginAbiSymbol));
    auto create = reinterpret_cast<CudaPluginCreateFn>(dlsym(lib, kCudaPluginCreateSymbol));
    if (abi == nullptr || create == nullptr || abi() != kCudaPluginAbi) {
      tried.push_back(absl::StrCat(path, ": not a CUDA plugin of this build (ABI ", kCudaPluginAbi, ")"));
      dlclose(lib);
      continue;
    }
    p.create = create;  // stays loaded: its devices, weights and buffers point into it
    return p;
  }
  p.error = absl::FailedPreconditionError(absl::StrCat("device \"cuda\": cannot load the CUDA backend (",
                                                       absl::StrJoin(tried, "; "),
                                                       "); set BRICKSERVE_CUDA_PLUGIN to its path"));
#endif
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Device>> CreateCudaDevice(const DeviceOptions& options) {
  static const Plugin plugin = Open();
  if (plugin.create == nullptr) return plugin.error;
  absl::StatusOr<std::unique_ptr<Device>> out = absl::UnknownError("the CUDA plugin returned nothing");
  plugin.create(&options, &out);
  return out;
}

}  // namespace brickserve
