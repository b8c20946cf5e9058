// .npy files: whole arrays, and the streamed writer / reader dsv3-eval uses for logits.
#include <gtest/gtest.h>

#include <fstream>
#include <vector>

#include "engine/util/npy.h"
#include "tests/test_util.h"

namespace dsv3::util_npy_test {
namespace {

using ::dsv3::testing::TempDir;

TEST(UtilNpyTest, StreamedRowsReadBackWholeAndStreamed) {
  TempDir dir;
  const std::string path = dir.file("a.npy");
  auto writer = NpyF32Writer::Create(path, {3, 2});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE(writer->Append(std::vector<float>{1, 2}).ok());
  ASSERT_TRUE(writer->Append(std::vector<float>{3, 4, 5, 6}).ok());
  ASSERT_TRUE(writer->Close().ok());

  auto whole = ReadNpyF32(path);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(whole->data, (std::vector<float>{1, 2, 3, 4, 5, 6}));

  auto reader = NpyF32Reader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<float> row(2);
  for (float first : {1.0f, 3.0f, 5.0f}) {
    ASSERT_TRUE(reader->Read(row).ok());
    EXPECT_EQ(row[0], first);
  }
  EXPECT_EQ(reader->Read(row).code(), absl::StatusCode::kOutOfRange);
}

TEST(UtilNpyTest, WriterRefusesTooManyOrTooFewValues) {
  TempDir dir;
  auto over = NpyF32Writer::Create(dir.file("over.npy"), {2});
  ASSERT_TRUE(over.ok());
  EXPECT_EQ(over->Append(std::vector<float>{1, 2, 3}).code(),
            absl::StatusCode::kFailedPrecondition);
  auto under = NpyF32Writer::Create(dir.file("under.npy"), {2});
  ASSERT_TRUE(under.ok());
  ASSERT_TRUE(under->Append(std::vector<float>{1}).ok());
  EXPECT_EQ(under->Close().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(UtilNpyTest, ATruncatedFileIsRefusedAtOpen) {
  TempDir dir;
  const std::vector<float> data = {1, 2, 3, 4};
  ASSERT_TRUE(WriteNpyF32(dir.file("a.npy"), {2, 2}, data.data()).ok());
  std::string bytes;
  {
    std::ifstream in(dir.file("a.npy"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir.file("cut.npy"), std::ios::binary) << bytes.substr(0, bytes.size() - 4);
  EXPECT_EQ(NpyF32Reader::Open(dir.file("cut.npy")).status().code(), absl::StatusCode::kDataLoss);
  std::ofstream(dir.file("junk.npy")) << "not numpy";
  EXPECT_EQ(NpyF32Reader::Open(dir.file("junk.npy")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dsv3::util_npy_test
