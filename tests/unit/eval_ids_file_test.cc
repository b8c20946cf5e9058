// dsv3-eval's --ids-file: sequences as given, and errors that name the line and the value.
#include <gtest/gtest.h>

#include <fstream>

#include "engine/eval/ids_file.h"
#include "tests/test_util.h"

namespace dsv3::eval_ids_file_test {
namespace {

using ::dsv3::testing::TempDir;

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadText(const std::string& text,
                                                           int64_t vocab = 100) {
  TempDir dir;
  std::ofstream(dir.file("ids.txt")) << text;
  return ReadIdsFile(dir.file("ids.txt"), vocab);
}

void ExpectError(const std::string& text, const std::string& fragment) {
  auto r = ReadText(text);
  ASSERT_FALSE(r.ok()) << "accepted: " << text;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(fragment), std::string::npos)
      << r.status() << " lacks '" << fragment << "'";
}

TEST(EvalIdsFileTest, ReadsOneSequencePerLineSkippingBlankOnes) {
  auto r = ReadText("1,2,3\n\n 7 , 8\r\n  \n99,0\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, (std::vector<std::vector<int32_t>>{{1, 2, 3}, {7, 8}, {99, 0}}));
}

TEST(EvalIdsFileTest, ErrorsNameTheLineAndTheValue) {
  ExpectError("1,2\n3,x,4\n", "line 2: 'x' is not a token id");
  ExpectError("1,2\n3,,4\n", "line 2: '' is not a token id");
  ExpectError("1,2,3.5\n", "line 1: '3.5' is not a token id");
  ExpectError("1,2\n\n5,100\n", "line 3: token id 100 is outside the vocabulary [0, 100)");
  ExpectError("1,-1\n", "token id -1 is outside");
  ExpectError("1,99999999999\n", "token id 99999999999 is outside");
  ExpectError("1,2\n5\n", "line 2: 1 token id; a sequence needs at least 2");
  ExpectError("", "no sequence");
  ExpectError("\n \n", "no sequence");
}

TEST(EvalIdsFileTest, AMissingFileIsNotFound) {
  auto r = ReadIdsFile("/nonexistent/ids.txt", 10);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/ids.txt"), std::string::npos);
}

}  // namespace
}  // namespace dsv3::eval_ids_file_test
