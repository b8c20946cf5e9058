// ReadPlan: each tensor-parallel rank reads only its slices' rows (widened to FP8 scale blocks),
// whole rows for column slices, whole dense tensors; the planned bytes are the stored bytes.
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

#include "engine/weights/read_plan.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/unit/safetensors_writer.h"

namespace dsv3::weights_read_plan_test {
namespace {

using ::dsv3::testing::BytesOf;
using ::dsv3::testing::Serialize;
using ::dsv3::testing::StTensor;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::WriteBytes;
using ::testing::HasSubstr;

constexpr int64_t kN = 300, kK = 256;  // FP8 "q": 3 scale rows (128, 128, 44), 2 scale cols

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed) % 127);  // no NaN codes
  return s;
}

class ReadPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two shards: an FP8 linear with its scales, and a BF16 linear plus a dense norm.
    WriteBytes(
        dir_.file("a.safetensors"),
        Serialize({{"pad", "F32", {3}, Pattern(12, 1)},
                   {"q.weight", "F8_E4M3", {kN, kK}, Pattern(kN * kK, 2)},
                   {"q.weight_scale_inv", "F32", {3, 2}, BytesOf(std::vector<float>(6, 1))}}));
    WriteBytes(dir_.file("b.safetensors"),
               Serialize({{"e.weight", "BF16", {10, 6}, Pattern(120, 3)},
                          {"norm", "F32", {6}, BytesOf(std::vector<float>(6, 1))}}));
    auto ckpt = Checkpoint::Open(dir_.path().string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ckpt_ = *std::move(ckpt);
  }

  // The bytes a read names, from the file itself.
  std::string FileBytes(const TensorRead& read) const {
    std::string all;
    std::ifstream in(ckpt_->files()[read.file]->path(), std::ios::binary);
    all.assign(std::istreambuf_iterator<char>(in), {});
    return all.substr(read.offset, read.bytes);
  }
  // Rows [r0, r1) of a stored 2-D tensor through the mmap.
  std::string StoredRows(const std::string& name, int64_t r0, int64_t r1) const {
    const TensorView v = *ckpt_->Get(name);
    const int64_t row = v.dim(1) * DTypeSize(v.dtype);
    return std::string(static_cast<const char*>(v.data) + r0 * row, (r1 - r0) * row);
  }

  TempDir dir_;
  std::unique_ptr<Checkpoint> ckpt_;
};

WeightRequest Linear(std::string prefix, int64_t n, int64_t k, Slice2D slice) {
  return {WeightRequest::Kind::kLinear, std::move(prefix), n, k, slice, {}};
}

TEST_F(ReadPlanTest, SlicesReadTheirRowsWidenedToFp8ScaleBlocks) {
  struct Row {
    const char* what;
    Slice2D slice;
    int64_t first, last;  // expected staged rows [first, last) of the stored weight
    Slice2D staged;       // the slice in staged rows, ends resolved
  };
  const Row rows[] = {
      {"whole", {}, 0, kN, {0, kN, 0, kK}},
      {"block-aligned rows", {128, 256, 0, -1}, 128, 256, {0, 128, 0, kK}},
      {"rows cutting blocks", {100, 130, 0, -1}, 0, 256, {100, 130, 0, kK}},
      {"last partial block", {256, 300, 0, -1}, 256, 300, {0, 44, 0, kK}},
      {"columns only: whole rows", {0, -1, 128, 256}, 0, kN, {0, kN, 128, 256}},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.what);
    const WeightRequest requests[] = {Linear("q", kN, kK, row.slice)};
    auto plan = PlanReads(*ckpt_, requests);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->loads.size(), 1u);
    const PlannedLoad& load = plan->loads[0];
    EXPECT_EQ(load.row_origin, row.first);
    EXPECT_EQ(load.staged_n, row.last - row.first);
    EXPECT_EQ(load.staged_slice.row_begin, row.staged.row_begin);
    EXPECT_EQ(load.staged_slice.row_end, row.staged.row_end);
    EXPECT_EQ(load.staged_slice.col_begin, row.staged.col_begin);
    EXPECT_EQ(load.staged_slice.col_end, row.staged.col_end);
    ASSERT_EQ(load.num_reads, 2u);  // the weight's rows, then their scale rows
    const TensorRead& w = plan->reads[load.first_read];
    const TensorRead& s = plan->reads[load.first_read + 1];
    EXPECT_EQ(w.shape, (std::vector<int64_t>{row.last - row.first, kK}));
    EXPECT_EQ(FileBytes(w), StoredRows("q.weight", row.first, row.last));
    EXPECT_EQ(s.shape, (std::vector<int64_t>{(row.last + 127) / 128 - row.first / 128, 2}));
    EXPECT_EQ(FileBytes(s),
              StoredRows("q.weight_scale_inv", row.first / 128, (row.last + 127) / 128));
    EXPECT_EQ(plan->bytes, w.bytes + s.bytes);
    EXPECT_EQ(plan->stored_bytes, uint64_t{kN * kK} + 6 * 4);
  }
}

TEST_F(ReadPlanTest, Bf16RowsAreExactAndDenseTensorsWhole) {
  const WeightRequest requests[] = {
      Linear("e", 10, 6, {3, 7, 0, -1}),
      {WeightRequest::Kind::kDense, "norm", 0, 0, {}, {6}},
  };
  auto plan = PlanReads(*ckpt_, requests);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->reads.size(), 2u);
  EXPECT_EQ(plan->loads[0].row_origin, 3);
  EXPECT_EQ(plan->loads[0].staged_n, 4);
  EXPECT_EQ(FileBytes(plan->reads[0]), StoredRows("e.weight", 3, 7));
  EXPECT_EQ(plan->reads[1].shape, (std::vector<int64_t>{6}));
  EXPECT_EQ(plan->reads[1].bytes, 24u);
  // Per-file totals add up to the plan and name the right shards.
  EXPECT_EQ(std::accumulate(plan->file_bytes.begin(), plan->file_bytes.end(), uint64_t{0}),
            plan->bytes);
  EXPECT_EQ(plan->file_bytes[plan->reads[0].file], plan->bytes);
}

TEST_F(ReadPlanTest, BadRequestsFailNamingFileAndTensor) {
  struct Row {
    const char* what;
    WeightRequest request;
    const char* message;
  };
  const Row rows[] = {
      {"missing", Linear("nope", 4, 4, {}), "tensor 'nope.weight' not found"},
      {"shape", Linear("q", kN, 128, {}), "shape [300, 256], expected [300, 128]"},
      {"slice", Linear("q", kN, kK, {0, 400, 0, -1}), "bad slice of [300, 256]"},
      {"dense dtype",
       {WeightRequest::Kind::kDense, "q.weight", 0, 0, {}, {kN, kK}},
       "dtype F8_E4M3, expected one of F32, BF16, F16"},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.what);
    const WeightRequest requests[] = {row.request};
    auto plan = PlanReads(*ckpt_, requests);
    ASSERT_FALSE(plan.ok());
    EXPECT_THAT(plan.status().message(), HasSubstr(row.message));
  }
}

TEST_F(ReadPlanTest, Fp8WeightWithoutScalesIsNotFound) {
  TempDir dir;
  WriteBytes(dir.file("m.safetensors"),
             Serialize({{"w.weight", "F8_E4M3", {4, 4}, Pattern(16, 0)}}));
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ckpt.ok());
  const WeightRequest requests[] = {Linear("w", 4, 4, {})};
  auto plan = PlanReads(**ckpt, requests);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(plan.status().message(), HasSubstr("without 'w.weight_scale_inv'"));
}

}  // namespace
}  // namespace dsv3::weights_read_plan_test
