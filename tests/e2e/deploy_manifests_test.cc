// CI gate for deploy/: scripts/check-deploy.sh parses every manifest and checks that each flag
// they pass to dsv3-server exists in `dsv3-server --help`.
#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace dsv3::deploy_manifests_test {
namespace {

TEST(DeployManifestsTest, ParseAndPassOnlyFlagsTheServerHas) {
  const auto r = testing::RunCommand(std::string(DSV3_TEST_DATA) + "/../../scripts/check-deploy.sh " +
                                     testing::BinaryPath("server/dsv3-server"));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace dsv3::deploy_manifests_test
