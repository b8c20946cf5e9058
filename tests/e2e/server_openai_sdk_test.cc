// The HTTP API through the official `openai` npm client (tests/e2e/openai/test.mjs): chat
// streamed and whole, completions, n = 2, logprobs, tools, errors and an auth failure, on the
// demo model. The client is installed with `npm ci` into the build tree, once: later runs reuse
// it (offline). Skipped only when npm or node is missing.
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace dsv3::testing::server_openai_sdk_test {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ServerOpenAiSdkTest, OfficialClientPassesItsChecks) {
  if (RunCommand("(command -v npm && command -v node) >/dev/null 2>&1").exit_code != 0) {
    GTEST_SKIP() << "npm or node is not installed: the openai SDK test cannot run";
  }
  const fs::path source = fs::path(DSV3_TEST_DATA).parent_path() / "e2e" / "openai";
  const fs::path dir = BinaryPath("openai-e2e");
  fs::create_directories(dir);
  const bool lock_changed =
      ReadAll(source / "package-lock.json") != ReadAll(dir / "package-lock.json");
  for (const char* file : {"package.json", "package-lock.json", "test.mjs"}) {
    fs::copy_file(source / file, dir / file, fs::copy_options::overwrite_existing);
  }
  if (lock_changed || !fs::exists(dir / "node_modules" / "openai" / "package.json")) {
    const CommandResult install = RunCommand("npm ci --prefix " + dir.string() +
                                             " --no-audit --no-fund --prefer-offline 2>&1");
    ASSERT_EQ(install.exit_code, 0) << install.out << install.err;
  }

  TempDir keys;
  std::ofstream(keys.file("keys")) << "sdk-test-key\n";
  ServerProcess server({"--api-key-file=" + keys.file("keys"), "--num-kv-blocks=512",
                        "--kv-block-size=16"},
                       /*http=*/true);
  ASSERT_TRUE(server.WaitServing(std::chrono::seconds(300))) << server.log();
  const CommandResult run =
      RunCommand("DSV3_HTTP_URL=" + server.http_url() +
                 " DSV3_API_KEY=sdk-test-key DSV3_MODEL=dsv3-demo-fp8 node " +
                 (dir / "test.mjs").string() + " 2>&1");
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err << "\nserver log:\n" << server.log();
  std::cout << run.out;
}

}  // namespace
}  // namespace dsv3::testing::server_openai_sdk_test
