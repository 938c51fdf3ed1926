// Choosing the backend at start-up: --device cpu|cuda|auto, and how a missing or foreign CUDA plugin
// (libbrickserve_cuda.so) is reported. The plugin is opened once per process, so each case runs as
// its own ctest entry with BRICKSERVE_CUDA_PLUGIN set (or not) and BRICKSERVE_EXPECT_PLUGIN saying
// what that setting must give.
#include <cstdlib>
#include <string>

#include "engine/backend/device.h"
#include "gtest/gtest.h"

namespace brickserve {
namespace {

std::string Expected() {
  const char* e = std::getenv("BRICKSERVE_EXPECT_PLUGIN");
  return e != nullptr ? e : "";
}

TEST(DeviceFactory, CpuAndUnknownKinds) {
  auto cpu = CreateDevice({"cpu", 1});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name().rfind("cpu", 0), 0u) << (*cpu)->name();
  auto bad = CreateDevice({"tpu"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("\"tpu\""), std::string::npos) << bad.status();
}

// What "cuda" says when it cannot be had, and that "auto" then runs on the CPU.
TEST(DeviceFactory, CudaRefusalNamesTheCauseAndAutoFallsBack) {
  const std::string expected = Expected();
  if (expected.empty()) GTEST_SKIP() << "run through ctest (BRICKSERVE_EXPECT_PLUGIN names the case)";
  auto cuda = CreateDevice({"cuda", 1});
  if (cuda.ok()) {
    ASSERT_EQ(expected, "gpu-or-no-gpu") << "a CUDA device where none was expected: " << (*cuda)->name();
    GTEST_SKIP() << "a GPU is present: " << (*cuda)->name();
  }
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << cuda.status();
  const std::string msg(cuda.status().message());
  if (expected == "missing") {
    EXPECT_NE(msg.find("cannot load the CUDA backend"), std::string::npos) << msg;
    EXPECT_NE(msg.find("BRICKSERVE_CUDA_PLUGIN"), std::string::npos) << msg;
  } else if (expected == "foreign") {
    EXPECT_NE(msg.find("not a CUDA plugin of this build"), std::string::npos) << msg;
  } else if (expected == "gpu-or-no-gpu") {
    // The build's own plugin loads; without a GPU (or without CUDA in the build) it says so.
    EXPECT_TRUE(msg.find("no usable CUDA GPU") != std::string::npos ||
                msg.find("this build has no CUDA backend") != std::string::npos)
        << msg;
  } else {
    FAIL() << "unknown BRICKSERVE_EXPECT_PLUGIN " << expected;
  }
  auto fallback = CreateDevice({"auto", 1});
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_EQ((*fallback)->name().rfind("cpu", 0), 0u) << (*fallback)->name();
}

}  // namespace
}  // namespace brickserve
