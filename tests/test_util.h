// Helpers shared by tests: paths to test data and to built programs, temporary directories.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <sys/types.h>

namespace dsv3::testing {

inline std::string TestDataPath(const std::string& relative) {
  return std::string(DSV3_TEST_DATA) + "/" + relative;
}

// A fixture folder or a file in one ("tiny-fp8", "tiny-ref/prompts.json"): the build extracts
// tests/data/fixtures/NAME.tar.xz to <build>/data/fixtures/NAME. From DSV3_FIXTURES_DIR when set
// (the device machine runs binaries built here and extracts the archives itself).
inline std::string FixturePath(const std::string& relative) {
  if (const char* dir = std::getenv("DSV3_FIXTURES_DIR")) return std::string(dir) + "/" + relative;
  return std::string(DSV3_FIXTURES_DIR) + "/" + relative;
}

inline std::string BinaryPath(const std::string& relative) {
  return std::string(DSV3_BINARY_DIR) + "/" + relative;
}

// A program of tools/ (dsv3-generate, dsv3-client, ...): from DSV3_TOOLS_DIR when set (the
// device machine gets the binaries in a folder of their own), else from this build.
inline std::string ToolPath(const std::string& name) {
  if (const char* dir = std::getenv("DSV3_TOOLS_DIR")) return std::string(dir) + "/" + name;
  return BinaryPath("tools/" + name);
}

// Runs `command` through /bin/sh and captures its output.
struct CommandResult {
  int exit_code = -1;     // valid when !signaled
  bool signaled = false;  // killed by a signal (a crash)
  std::string out;
  std::string err;
};
CommandResult RunCommand(const std::string& command);

// The direct children of process `pid` (from /proc).
std::vector<pid_t> ChildPids(pid_t pid);
// Whether process `pid` is running (a zombie waiting to be reaped counts as gone).
bool ProcessRunning(pid_t pid);

// Copies a directory tree (for tests that damage a fixture).
void CopyTree(const std::string& from, const std::string& to);

// A fresh, empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace dsv3::testing
