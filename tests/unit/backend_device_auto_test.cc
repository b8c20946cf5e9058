// --device auto (the default of dsv3-server): cuda only where the build has the CUDA backend and
// a GPU is visible. This test links the backend area without the CUDA backend, as a CPU-only
// build does, so auto must resolve to cpu on any machine.
#include "engine/backend/backend_factory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace dsv3::backend_device_auto_test {
namespace {

using ::testing::HasSubstr;

TEST(BackendDeviceAutoTest, AutoIsCpuWithoutCudaBackend) {
  auto device = ResolveDevice("auto");
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(*device, "cpu");
}

TEST(BackendDeviceAutoTest, ExplicitDevicesAreKept) {
  EXPECT_EQ(ResolveDevice("cpu").value(), "cpu");
  EXPECT_EQ(ResolveDevice("cuda").value(), "cuda");
}

TEST(BackendDeviceAutoTest, UnknownDeviceIsRejectedNamingTheFlag) {
  for (const char* bad : {"gpu", "", "CUDA", "cuda:0"}) {
    auto device = ResolveDevice(bad);
    EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(device.status().message(), HasSubstr("--device")) << bad;
    EXPECT_THAT(device.status().message(), HasSubstr(std::string("'") + bad + "'")) << bad;
  }
}

}  // namespace
}  // namespace dsv3::backend_device_auto_test
