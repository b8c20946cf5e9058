#include <array>
#include <random>
#include <string>
#include <vector>

#include "engine/weights/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "tests/unit/safetensors_writer.h"

namespace dsv3::weights_checkpoint_test {
namespace {

using ::dsv3::testing::BytesOf;
using ::dsv3::testing::Serialize;
using ::dsv3::testing::StTensor;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::WriteBytes;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

StTensor F32Tensor(std::string name, std::vector<int64_t> shape, const std::vector<float>& v) {
  return {std::move(name), "F32", std::move(shape), BytesOf(v)};
}

std::vector<float> Iota(size_t n, float start = 0.0f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

void WriteIndex(const TempDir& dir, const std::map<std::string, std::string>& weight_map) {
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  WriteBytes(dir.file("model.safetensors.index.json"), index.dump());
}

TEST(CheckpointTest, SingleFileWithoutIndex) {
  TempDir dir;
  WriteBytes(dir.file("model.safetensors"),
             Serialize({F32Tensor("b", {2, 2}, Iota(4)), F32Tensor("a", {3}, Iota(3, 10))}));
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT((*ckpt)->Names(), ElementsAre("a", "b"));
  EXPECT_TRUE((*ckpt)->Has("a"));
  EXPECT_FALSE((*ckpt)->Has("c"));
  EXPECT_EQ((*ckpt)->FileOf("a"), dir.file("model.safetensors"));
  EXPECT_EQ((*ckpt)->FileOf("c"), "");
  auto a = (*ckpt)->Get("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->ShapeString(), "[3]");
  EXPECT_EQ(a->ptr<float>()[2], 12.0f);
}

TEST(CheckpointTest, ShardsThroughIndex) {
  TempDir dir;
  WriteBytes(dir.file("model-00001-of-00002.safetensors"),
             Serialize({F32Tensor("x", {2}, Iota(2)), F32Tensor("y", {1}, Iota(1))}));
  WriteBytes(dir.file("model-00002-of-00002.safetensors"),
             Serialize({F32Tensor("z", {4}, Iota(4, 5))}));
  WriteIndex(dir, {{"x", "model-00001-of-00002.safetensors"},
                   {"y", "model-00001-of-00002.safetensors"},
                   {"z", "model-00002-of-00002.safetensors"}});
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT((*ckpt)->Names(), ElementsAre("x", "y", "z"));
  EXPECT_EQ((*ckpt)->FileOf("z"), dir.file("model-00002-of-00002.safetensors"));
  const std::array<int64_t, 1> shape = {4};
  auto z = (*ckpt)->LoadF32("z", shape);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_THAT(*z, ElementsAre(5, 6, 7, 8));
}

TEST(CheckpointTest, IndexNamingMissingShard) {
  TempDir dir;
  WriteBytes(dir.file("s1.safetensors"), Serialize({F32Tensor("x", {2}, Iota(2))}));
  WriteIndex(dir, {{"x", "s1.safetensors"}, {"y", "s2.safetensors"}});
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr("s2.safetensors"), HasSubstr("exist")));
}

TEST(CheckpointTest, IndexNamingTensorAbsentFromItsShard) {
  TempDir dir;
  WriteBytes(dir.file("s1.safetensors"), Serialize({F32Tensor("x", {2}, Iota(2))}));
  WriteBytes(dir.file("s2.safetensors"), Serialize({F32Tensor("y", {2}, Iota(2))}));
  WriteIndex(dir, {{"x", "s1.safetensors"}, {"y", "s1.safetensors"}});
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(),
              AllOf(HasSubstr("s1.safetensors"), HasSubstr("tensor 'y'"), HasSubstr("not found")));
}

TEST(CheckpointTest, BadIndexAndCorruptShardNameTheirFiles) {
  TempDir dir;
  WriteBytes(dir.file("model.safetensors.index.json"), "{\"weight_map\": [1]}");
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("model.safetensors.index.json"));

  WriteIndex(dir, {{"x", "s1.safetensors"}});
  WriteBytes(dir.file("s1.safetensors"), "garbage");
  ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("s1.safetensors"));
}

// Bug 11: an index naming files outside the model directory ("../../../etc/passwd") made the
// checkpoint open them, and the error printed the file's first bytes.
TEST(CheckpointTest, IndexNamingAFileOutsideTheDirectoryIsRefused) {
  TempDir outside;
  const std::string secret = "root:x:0:0:secret-password-hash:/root:/bin/bash\n";
  WriteBytes(outside.file("passwd"), secret);
  TempDir dir;
  WriteBytes(dir.file("s1.safetensors"), Serialize({F32Tensor("x", {2}, Iota(2))}));
  const std::string relative = "../" + outside.path().filename().string() + "/passwd";
  for (const std::string& shard :
       {relative, outside.file("passwd"), std::string("../../../etc/passwd"),
        std::string("sub/s1.safetensors"), std::string(".."), std::string("..\\s1.safetensors")}) {
    SCOPED_TRACE(shard);
    WriteIndex(dir, {{"x", "s1.safetensors"}, {"y", shard}});
    auto ckpt = Checkpoint::Open(dir.path().string());
    ASSERT_FALSE(ckpt.ok());
    EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ckpt.status().message(),
                AllOf(HasSubstr("tensor 'y'"), HasSubstr("not a file name in the model directory")));
    EXPECT_THAT(std::string(ckpt.status().message()), Not(HasSubstr("root:x")));
  }
}

// A file in the directory that is not a safetensors file: the error names it and never quotes it.
TEST(CheckpointTest, ErrorsNeverQuoteTheFilesContents) {
  TempDir dir;
  WriteBytes(dir.file("s1.safetensors"), "{\"a\": 1} secret-token-1234");  // a text file
  WriteIndex(dir, {{"x", "s1.safetensors"}});
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("s1.safetensors: header length"));
  // The first 8 bytes read as a little-endian length would spell them out: not printed.
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<uint8_t>("{\"a\": 1} "[i]);
  EXPECT_THAT(std::string(ckpt.status().message()), Not(HasSubstr(std::to_string(length))));

  // A header length that fits, over text that is not JSON.
  std::string bytes(8, '\0');
  const std::string text = "secret-token-1234";
  bytes[0] = static_cast<char>(text.size());
  WriteBytes(dir.file("s1.safetensors"), bytes + text);
  ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("s1.safetensors: header is not valid JSON"));
  EXPECT_THAT(std::string(ckpt.status().message()), Not(HasSubstr("secret")));

  WriteBytes(dir.file("model.safetensors.index.json"), "{\"weight_map\": secret-token-1234");
  ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("model.safetensors.index.json: invalid JSON"));
  EXPECT_THAT(std::string(ckpt.status().message()), Not(HasSubstr("secret")));
}

TEST(CheckpointTest, DuplicateTensorAcrossFiles) {
  TempDir dir;
  WriteBytes(dir.file("a.safetensors"), Serialize({F32Tensor("w", {2}, Iota(2))}));
  WriteBytes(dir.file("b.safetensors"), Serialize({F32Tensor("w", {2}, Iota(2))}));
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), AllOf(HasSubstr("tensor 'w'"), HasSubstr("a.safetensors"),
                                             HasSubstr("b.safetensors")));
}

TEST(CheckpointTest, EmptyOrMissingDirectory) {
  TempDir dir;
  WriteBytes(dir.file("config.json"), "{}");
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(),
              AllOf(HasSubstr(dir.path().string()), HasSubstr("no .safetensors")));
  ckpt = Checkpoint::Open(dir.file("absent"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("absent"));
}

class CheckpointLookupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteBytes(dir_.file("m.safetensors"),
               Serialize({F32Tensor("f32", {2, 3}, Iota(6)),
                          {"bf16", "BF16", {2}, BytesOf(std::vector<uint16_t>{0x3f80, 0xc040})},
                          {"f16", "F16", {2}, BytesOf(std::vector<uint16_t>{0x3c00, 0xc200})},
                          {"ids", "I32", {2}, BytesOf(std::vector<int32_t>{1, 2})}}));
    auto ckpt = Checkpoint::Open(dir_.path().string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ckpt_ = *std::move(ckpt);
  }
  TempDir dir_;
  std::unique_ptr<Checkpoint> ckpt_;
};

TEST_F(CheckpointLookupTest, MissingTensor) {
  auto t = ckpt_->Get("model.layers.0.nope");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(),
              AllOf(HasSubstr(dir_.path().string()), HasSubstr("tensor 'model.layers.0.nope'")));
}

TEST_F(CheckpointLookupTest, WrongShape) {
  const std::array<int64_t, 2> shape = {3, 2};
  auto t = ckpt_->Get("f32", shape, {DType::kF32});
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), AllOf(HasSubstr("m.safetensors"), HasSubstr("tensor 'f32'"),
                                          HasSubstr("shape [2, 3], expected [3, 2]")));
  const std::array<int64_t, 1> flat = {6};
  EXPECT_FALSE(ckpt_->Get("f32", flat, {DType::kF32}).ok());
}

TEST_F(CheckpointLookupTest, WrongDtype) {
  const std::array<int64_t, 2> shape = {2, 3};
  auto t = ckpt_->Get("f32", shape, {DType::kF8E4M3});
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), AllOf(HasSubstr("m.safetensors"), HasSubstr("tensor 'f32'"),
                                          HasSubstr("dtype F32, expected one of F8_E4M3")));
  const std::array<int64_t, 1> two = {2};
  auto ids = ckpt_->LoadF32("ids", two);
  ASSERT_FALSE(ids.ok());
  EXPECT_THAT(ids.status().message(), AllOf(HasSubstr("tensor 'ids'"), HasSubstr("dtype I32")));
}

TEST_F(CheckpointLookupTest, LoadF32ConvertsFloatTypes) {
  const std::array<int64_t, 1> two = {2};
  EXPECT_THAT(*ckpt_->LoadF32("bf16", two), ElementsAre(1.0f, -3.0f));
  EXPECT_THAT(*ckpt_->LoadF32("f16", two), ElementsAre(1.0f, -3.0f));
  const std::array<int64_t, 2> shape = {2, 3};
  EXPECT_THAT(*ckpt_->LoadF32("f32", shape), ElementsAre(0, 1, 2, 3, 4, 5));
}

// A random block-scaled FP8 weight [n, k] and its float reference, computed element by element.
struct Fp8Weight {
  std::vector<uint8_t> q;
  std::vector<float> scale;  // [ceil(n/bn), ceil(k/bk)]
  std::vector<float> ref;    // [n, k]
};

Fp8Weight MakeFp8(int64_t n, int64_t k, int64_t bn, int64_t bk, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t sn = (n + bn - 1) / bn, sk = (k + bk - 1) / bk;
  Fp8Weight w;
  w.q.resize(n * k);
  for (uint8_t& b : w.q) {
    do b = static_cast<uint8_t>(rng() & 0xff);
    while ((b & 0x7f) == 0x7f);  // NaN codes
  }
  std::uniform_real_distribution<float> dist(1e-4f, 1e-2f);
  w.scale.resize(sn * sk);
  for (float& s : w.scale) s = dist(rng);
  w.ref.resize(n * k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      w.ref[r * k + c] = Fp8E4M3ToF32(w.q[r * k + c]) * w.scale[(r / bn) * sk + c / bk];
    }
  }
  return w;
}

std::vector<float> RefSlice(const std::vector<float>& ref, int64_t k, int64_t r0, int64_t r1,
                            int64_t c0, int64_t c1) {
  std::vector<float> out;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) out.push_back(ref[r * k + c]);
  }
  return out;
}

TEST(CheckpointFp8Test, DequantizesRaggedShapesAndSlices) {
  struct Row {
    int64_t n, k, bn, bk;
  };
  const std::vector<Row> rows = {
      {200, 300, 128, 128}, {1, 130, 128, 128}, {576, 716, 128, 128}, {128, 128, 128, 128},
      {129, 257, 128, 128}, {7, 5, 128, 128},   {45, 70, 16, 32},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(absl::StrCat(row.n, "x", row.k, " blocks ", row.bn, "x", row.bk));
    const Fp8Weight w = MakeFp8(row.n, row.k, row.bn, row.bk, row.n * 1000 + row.k);
    const int64_t sn = (row.n + row.bn - 1) / row.bn, sk = (row.k + row.bk - 1) / row.bk;
    TempDir dir;
    WriteBytes(dir.file("m.safetensors"),
               Serialize({{"l.weight", "F8_E4M3", {row.n, row.k}, BytesOf(w.q)},
                          F32Tensor("l.weight_scale_inv", {sn, sk}, w.scale)}));
    auto ckpt = Checkpoint::Open(dir.path().string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    const std::vector<Slice2D> slices = {
        {},
        {0, row.n / 2, 0, -1},
        {row.n / 3, -1, row.k / 3, row.k - 1},
        {row.n - 1, row.n, 0, row.k},
        {0, -1, row.k / 2, -1},
    };
    for (const Slice2D& s : slices) {
      SCOPED_TRACE(absl::StrCat("rows ", s.row_begin, ":", s.row_end, " cols ", s.col_begin, ":",
                                s.col_end));
      auto got = (*ckpt)->LoadLinearF32("l", row.n, row.k, s, row.bn, row.bk);
      ASSERT_TRUE(got.ok()) << got.status();
      const int64_t r1 = s.row_end < 0 ? row.n : s.row_end;
      const int64_t c1 = s.col_end < 0 ? row.k : s.col_end;
      // Bitwise equal: both sides are one f32 multiply of the same operands.
      EXPECT_EQ(*got, RefSlice(w.ref, row.k, s.row_begin, r1, s.col_begin, c1));
    }
  }
}

TEST(CheckpointFp8Test, AcceptsBf16Scales) {
  const int64_t n = 130, k = 140;
  Fp8Weight w = MakeFp8(n, k, 128, 128, 7);
  std::vector<uint16_t> scale_bf16;
  for (float& s : w.scale) {
    scale_bf16.push_back(F32ToBf16(s));
    s = Bf16ToF32(scale_bf16.back());
  }
  TempDir dir;
  WriteBytes(dir.file("m.safetensors"),
             Serialize({{"l.weight", "F8_E4M3", {n, k}, BytesOf(w.q)},
                        {"l.weight_scale_inv", "BF16", {2, 2}, BytesOf(scale_bf16)}}));
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto got = (*ckpt)->LoadLinearF32("l", n, k);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      ASSERT_EQ((*got)[r * k + c], Fp8E4M3ToF32(w.q[r * k + c]) * w.scale[(r / 128) * 2 + c / 128]);
    }
  }
}

TEST(CheckpointFp8Test, Fp8WithoutScaleInv) {
  TempDir dir;
  WriteBytes(
      dir.file("m.safetensors"),
      Serialize({{"model.layers.3.mlp.up_proj.weight", "F8_E4M3", {4, 4}, std::string(16, 1)}}));
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto got = (*ckpt)->LoadLinearF32("model.layers.3.mlp.up_proj", 4, 4);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(got.status().message(),
              AllOf(HasSubstr("m.safetensors"), HasSubstr("model.layers.3.mlp.up_proj.weight"),
                    HasSubstr("weight_scale_inv")));
}

TEST(CheckpointFp8Test, ScaleInvOfWrongShapeOrDtype) {
  TempDir dir;
  WriteBytes(dir.file("m.safetensors"),
             Serialize({{"a.weight", "F8_E4M3", {200, 300}, std::string(60000, 1)},
                        F32Tensor("a.weight_scale_inv", {2, 2}, Iota(4)),
                        {"b.weight", "F8_E4M3", {2, 2}, std::string(4, 1)},
                        {"b.weight_scale_inv", "I32", {1, 1}, std::string(4, 0)}}));
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto a = (*ckpt)->LoadLinearF32("a", 200, 300);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(),
              AllOf(HasSubstr("m.safetensors"), HasSubstr("tensor 'a.weight_scale_inv'"),
                    HasSubstr("shape [2, 2], expected [2, 3]")));
  auto b = (*ckpt)->LoadLinearF32("b", 2, 2);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(),
              AllOf(HasSubstr("tensor 'b.weight_scale_inv'"), HasSubstr("dtype I32")));
}

TEST(CheckpointLinearTest, FloatWeightsWithSlices) {
  const int64_t n = 5, k = 7;
  const std::vector<float> ref = Iota(n * k, -3.0f);
  std::vector<uint16_t> bf16;
  for (float v : ref) bf16.push_back(F32ToBf16(v));  // small integers: exact in BF16
  TempDir dir;
  WriteBytes(dir.file("m.safetensors"), Serialize({F32Tensor("f.weight", {n, k}, ref),
                                                   {"b.weight", "BF16", {n, k}, BytesOf(bf16)}}));
  auto ckpt = Checkpoint::Open(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  for (const char* prefix : {"f", "b"}) {
    SCOPED_TRACE(prefix);
    EXPECT_EQ(*(*ckpt)->LoadLinearF32(prefix, n, k), ref);
    EXPECT_EQ(*(*ckpt)->LoadLinearF32(prefix, n, k, {1, 4, 2, 6}), RefSlice(ref, k, 1, 4, 2, 6));
  }
  auto wrong = (*ckpt)->LoadLinearF32("f", k, n);
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.status().message(), AllOf(HasSubstr("m.safetensors"), HasSubstr("'f.weight'")));
  auto bad_slice = (*ckpt)->LoadLinearF32("f", n, k, {3, 2, 0, -1});
  ASSERT_FALSE(bad_slice.ok());
  EXPECT_THAT(bad_slice.status().message(),
              AllOf(HasSubstr("m.safetensors"), HasSubstr("'f.weight'"), HasSubstr("bad slice")));
  auto missing = (*ckpt)->LoadLinearF32("g", n, k);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("tensor 'g.weight' not found"));
}

TEST(DequantizeFp8BlocksTest, PartialEdgeBlocksUseTheirOwnScale) {
  // [3, 3] with 2x2 blocks: scale_inv [2, 2]; code 0x38 is 1.0 in E4M3.
  const std::vector<uint8_t> q(9, 0x38);
  const std::vector<float> scale = {1, 2, 3, 4};
  std::vector<float> out(9);
  DequantizeFp8Blocks(q.data(), 3, 3, scale.data(), 2, 2, 0, 3, 0, 3, out.data());
  EXPECT_THAT(out, ElementsAre(1, 1, 2, 1, 1, 2, 3, 3, 4));
}

}  // namespace
}  // namespace dsv3::weights_checkpoint_test
