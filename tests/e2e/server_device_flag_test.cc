// dsv3-server's --device: `auto` (the default, which the image relies on) serves on the device
// it logs, and a value that is no device stops startup with a message naming the flag.
#include <regex>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_device_flag_test {
namespace {

using ::testing::HasSubstr;

TEST(ServerDeviceFlagTest, AutoServesOnTheDeviceItLogs) {
  ServerProcess server({"--device=auto", "--model=" + FixturePath("tiny-fp8"),
                        "--num-kv-blocks=64", "--kv-block-size=16"});
  ASSERT_TRUE(server.WaitServing()) << server.log();
  std::smatch m;
  const std::string log = server.log();
  ASSERT_TRUE(std::regex_search(log, m, std::regex("--device auto: .*using (cpu|cuda)")))
      << log;
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(server.Stub()->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.backend(), m[1].str());
  EXPECT_EQ(server.Stop(), 0);
}

TEST(ServerDeviceFlagTest, UnknownDeviceIsRejectedNamingTheFlag) {
  const CommandResult r = RunCommand(BinaryPath("server/dsv3-server") +
                                     " --device gpu --listen 127.0.0.1:0 --metrics-listen ''");
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out + r.err, HasSubstr("--device"));
  EXPECT_THAT(r.out + r.err, HasSubstr("gpu"));
}

}  // namespace
}  // namespace dsv3::testing::server_device_flag_test
