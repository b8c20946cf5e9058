// Entry point of every test executable. The files of one kind and area (tests/unit/kv_*) build
// into one executable (tests/CMakeLists.txt: unity sources compile the shared headers once per
// batch of files), and ctest runs it once per source file with --source=<file name>, which
// selects the tests defined in that file. An explicit --gtest_filter wins over --source.
#include <cstdio>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace {

std::string_view FileName(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// The gtest filter ("Suite.Name:Suite.Other:...") naming every test defined in the file called
// `source`. Empty, with the reason on stderr, when no test is defined there or when a test
// suite spans two files: a suite's tests (its fixture, SetUpTestSuite) belong to one file, so
// that a file's run is the same whichever other files share its executable.
std::string FilterForSource(std::string_view source) {
  const testing::UnitTest& unit = *testing::UnitTest::GetInstance();
  const std::string_view wanted = FileName(source);
  std::string filter;
  for (int i = 0; i < unit.total_test_suite_count(); ++i) {
    const testing::TestSuite& suite = *unit.GetTestSuite(i);
    const std::string_view file = FileName(suite.GetTestInfo(0)->file());
    for (int j = 0; j < suite.total_test_count(); ++j) {
      const testing::TestInfo& test = *suite.GetTestInfo(j);
      if (FileName(test.file()) != file) {
        std::fprintf(stderr, "test suite %s has tests in both %s and %s; keep it in one file\n",
                     suite.name(), std::string(file).c_str(), test.file());
        return "";
      }
      if (file != wanted) continue;
      if (!filter.empty()) filter += ':';
      filter += std::string(suite.name()) + "." + test.name();
    }
  }
  if (filter.empty()) {
    std::fprintf(stderr, "no test of this executable is defined in %s\n",
                 std::string(source).c_str());
  }
  return filter;
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);  // removes the --gtest_* arguments
  constexpr std::string_view kSource = "--source=";
  std::string_view source;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]).starts_with(kSource)) {
      source = std::string_view(argv[i]).substr(kSource.size());
    } else {
      std::fprintf(stderr, "unknown argument %s (this takes --source=FILE and gtest's flags)\n",
                   argv[i]);
      return 2;
    }
  }
  if (!source.empty()) {
    const std::string filter = FilterForSource(source);
    if (filter.empty()) return 2;
    if (GTEST_FLAG_GET(filter) == "*") GTEST_FLAG_SET(filter, filter);
  }
  return RUN_ALL_TESTS();
}
