// ParallelReader: several threads, a ring smaller than the data and odd offsets still hand the
// consumer exactly the bytes the mmap sees, in plan order; progress adds up to the plan; a file
// that is shorter than its plan fails with DataLoss naming it.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/weights/checkpoint.h"
#include "engine/weights/parallel_reader.h"
#include "engine/weights/read_plan.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/unit/safetensors_writer.h"

namespace dsv3::weights_parallel_reader_test {
namespace {

using ::dsv3::testing::Serialize;
using ::dsv3::testing::StTensor;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::WriteBytes;
using ::testing::HasSubstr;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Three shards of U8 tensors of awkward sizes (odd offsets, one empty, some larger than a
// chunk), and one read per tensor, the whole or some rows, in a shuffled order.
struct Fixture {
  TempDir dir;
  std::unique_ptr<Checkpoint> ckpt;
  std::vector<TensorRead> reads;
  uint64_t largest = 0;

  void Write() {
    const int64_t cols[] = {1, 7, 4096, 513, 0, 3000};
    std::vector<std::string> names;
    for (int f = 0; f < 3; ++f) {
      std::vector<StTensor> tensors;
      for (int t = 0; t < 6; ++t) {
        const int64_t rows = 1 + (f * 6 + t) % 37;
        const std::string name = "f" + std::to_string(f) + "t" + std::to_string(t);
        tensors.push_back({name,
                           "U8",
                           {rows, cols[t]},
                           RandomBytes(rows * cols[t], static_cast<uint32_t>(f * 6 + t))});
        names.push_back(name);
      }
      WriteBytes(dir.file("shard" + std::to_string(f) + ".safetensors"), Serialize(tensors));
    }
    auto opened = Checkpoint::Open(dir.path().string());
    ASSERT_TRUE(opened.ok()) << opened.status();
    ckpt = *std::move(opened);
    std::shuffle(names.begin(), names.end(), std::mt19937(7));
    // Reads made from the locations directly (PlanReads knows only model weights' dtypes),
    // every other one trimmed to its last rows.
    for (size_t i = 0; i < names.size(); ++i) {
      const Checkpoint::Location& at = *ckpt->Locate(names[i]);
      const SafetensorsEntry& e = *at.entry;
      const int64_t row = e.shape[1], r0 = i % 2 ? e.shape[0] / 3 : 0;
      TensorRead read;
      read.name = names[i];
      read.file = at.file;
      read.offset = ckpt->files()[at.file]->data_offset() + e.begin + r0 * row;
      read.bytes = (e.shape[0] - r0) * row;
      read.dtype = e.dtype;
      read.shape = {e.shape[0] - r0, row};
      largest = std::max(largest, read.bytes);
      reads.push_back(read);
    }
  }
  std::vector<std::string> Paths() const {
    std::vector<std::string> paths;
    for (const auto& f : ckpt->files()) paths.push_back(f->path());
    return paths;
  }
  // What the mmap holds for read i.
  std::string Expected(size_t i) const {
    const TensorRead& r = reads[i];
    const SafetensorsFile& f = *ckpt->files()[r.file];
    const TensorView whole = *ckpt->Get(r.name);
    const uint64_t start = r.offset - f.data_offset() - ckpt->Locate(r.name)->entry->begin;
    return std::string(static_cast<const char*>(whole.data) + start, r.bytes);
  }
};

TEST(ParallelReaderTest, ReadsEqualTheMappedBytesWithASmallRingAndManyThreads) {
  Fixture fx;
  fx.Write();
  struct Row {
    int threads;
    int64_t chunk;
    bool direct_io;
  };
  for (const Row& row : {Row{1, 4096, false}, Row{4, 8192, false}, Row{8, 4096, true}}) {
    SCOPED_TRACE(::testing::Message() << row.threads << " threads, chunk " << row.chunk);
    std::vector<uint64_t> per_file(fx.ckpt->files().size(), 0);
    for (const TensorRead& r : fx.reads) per_file[r.file] += r.bytes;
    LoadProgress progress;
    progress.Begin(fx.Paths(), per_file);
    ReaderOptions options{.threads = row.threads,
                          .chunk_bytes = row.chunk,
                          .staging_bytes = 1,
                          .direct_io = row.direct_io};
    auto reader = ParallelReader::Start(fx.Paths(), fx.reads, fx.largest, HostAllocator(), options,
                                        &progress);
    ASSERT_TRUE(reader.ok()) << reader.status();
    // The ring is the minimum (twice the largest request), far below the total read.
    uint64_t total = 0;
    for (const TensorRead& r : fx.reads) total += r.bytes;
    EXPECT_LT((*reader)->ring_bytes(), total);
    for (size_t i = 0; i < fx.reads.size(); ++i) {
      auto data = (*reader)->Wait(i);
      ASSERT_TRUE(data.ok()) << data.status();
      ASSERT_EQ(std::string(reinterpret_cast<const char*>(*data), fx.reads[i].bytes),
                fx.Expected(i))
          << fx.reads[i].name;
      (*reader)->Release(i);
    }
    const LoadProgress::Snapshot s = progress.Get();
    EXPECT_EQ(s.bytes_read, total);
    EXPECT_EQ(s.bytes_expected, total);
    EXPECT_EQ(s.shards_done, 3);
    EXPECT_EQ(s.shards_total, 3);
  }
}

TEST(ParallelReaderTest, HoldingTwoReadsAtOnceFitsTheRing) {
  Fixture fx;
  fx.Write();
  // Pairs held together, as a weight and its scales are; sized for the largest pair.
  uint64_t largest_pair = 0;
  for (size_t i = 0; i + 1 < fx.reads.size(); i += 2) {
    largest_pair = std::max(largest_pair, fx.reads[i].bytes + fx.reads[i + 1].bytes);
  }
  auto reader =
      ParallelReader::Start(fx.Paths(), fx.reads, largest_pair, HostAllocator(),
                            {.threads = 3, .chunk_bytes = 4096, .staging_bytes = 1}, nullptr);
  ASSERT_TRUE(reader.ok()) << reader.status();
  for (size_t i = 0; i + 1 < fx.reads.size(); i += 2) {
    auto a = (*reader)->Wait(i);
    auto b = (*reader)->Wait(i + 1);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(*a), fx.reads[i].bytes), fx.Expected(i));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(*b), fx.reads[i + 1].bytes),
              fx.Expected(i + 1));
    (*reader)->Release(i + 1);
  }
}

TEST(ParallelReaderTest, AFileShorterThanItsPlanIsDataLossNamingIt) {
  Fixture fx;
  fx.Write();
  // The plan was made from the intact files; then a shard loses its tail.
  const std::string victim = fx.ckpt->files()[1]->path();
  std::filesystem::resize_file(victim, fx.ckpt->files()[1]->data_offset() + 5);
  auto reader = ParallelReader::Start(fx.Paths(), fx.reads, fx.largest, HostAllocator(),
                                      {.threads = 2, .chunk_bytes = 4096}, nullptr);
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::Status failure;
  for (size_t i = 0; i < fx.reads.size() && failure.ok(); ++i) {
    auto data = (*reader)->Wait(i);
    if (!data.ok()) failure = data.status();
    (*reader)->Release(i);
  }
  EXPECT_EQ(failure.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(failure.message(), HasSubstr(victim));
}

// One tensor of `dtype` after a 3-byte tensor (so its bytes start at an odd offset), with one
// non-finite element planted at `where` (or none): the reader's scan flags exactly the reads
// that hold one, including an element cut in two by a chunk boundary.
TEST(ParallelReaderTest, TheScanFlagsANonFiniteElementWhereverItLies) {
  enum class Where { kNowhere, kAcrossFirstChunkCut, kInsideSecondChunk, kLastElement };
  struct Row {
    std::string dtype;
    DType type;
    std::string finite, bad;  // one element's bytes, little-endian
    Where where;
  };
  const std::string f32_one("\x00\x00\x80\x3f", 4), f32_nan("\x00\x00\xc0\x7f", 4);
  const std::string f32_inf("\x00\x00\x80\x7f", 4);
  const std::string bf16_one("\x80\x3f", 2), bf16_nan("\xc0\x7f", 2), bf16_inf("\x80\xff", 2);
  const std::string fp8_one("\x38", 1), fp8_nan("\xff", 1);
  const Row rows[] = {
      {"F32", DType::kF32, f32_one, f32_nan, Where::kNowhere},
      {"F32", DType::kF32, f32_one, f32_nan, Where::kAcrossFirstChunkCut},
      {"F32", DType::kF32, f32_one, f32_inf, Where::kInsideSecondChunk},
      {"F32", DType::kF32, f32_one, f32_nan, Where::kLastElement},
      {"BF16", DType::kBF16, bf16_one, bf16_nan, Where::kNowhere},
      {"BF16", DType::kBF16, bf16_one, bf16_inf, Where::kAcrossFirstChunkCut},
      {"BF16", DType::kBF16, bf16_one, bf16_nan, Where::kLastElement},
      {"F8_E4M3", DType::kF8E4M3, fp8_one, fp8_nan, Where::kNowhere},
      {"F8_E4M3", DType::kF8E4M3, fp8_one, fp8_nan, Where::kInsideSecondChunk},
      {"F8_E4M3", DType::kF8E4M3, fp8_one, fp8_nan, Where::kLastElement},
  };
  constexpr int64_t kElements = 5000;
  constexpr uint64_t kChunk = 4096;
  for (const Row& row : rows) {
    SCOPED_TRACE(::testing::Message() << row.dtype << ", case " << static_cast<int>(row.where));
    TempDir dir;
    const std::string path = dir.file("shard.safetensors");
    const size_t size = row.finite.size();
    auto write = [&](int64_t bad_element) {
      std::string data;
      for (int64_t e = 0; e < kElements; ++e) data += e == bad_element ? row.bad : row.finite;
      WriteBytes(path, Serialize({{"pad", "U8", {3}, "abc"}, {"t", row.dtype, {kElements}, data}}));
    };
    write(-1);
    auto ckpt = Checkpoint::Open(dir.path().string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    const Checkpoint::Location& at = *(*ckpt)->Locate("t");
    const uint64_t offset = (*ckpt)->files()[0]->data_offset() + at.entry->begin;
    ASSERT_EQ(offset % 2, 1u);
    // The reader's chunks start at multiples of kChunk (offset aligned down to 4 KiB).
    const uint64_t first_cut = offset / kChunk * kChunk + kChunk;
    int64_t bad = -1;
    switch (row.where) {
      case Where::kNowhere: break;
      case Where::kAcrossFirstChunkCut: bad = static_cast<int64_t>((first_cut - offset) / size); break;
      case Where::kInsideSecondChunk: bad = static_cast<int64_t>((first_cut + 100 - offset) / size); break;
      case Where::kLastElement: bad = kElements - 1; break;
    }
    if (row.where == Where::kAcrossFirstChunkCut) {
      ASSERT_LT(offset + bad * size, first_cut);  // the element really is cut
      ASSERT_GT(offset + (bad + 1) * size, first_cut);
    }
    write(bad);
    TensorRead read{.name = "t", .file = 0, .offset = offset, .bytes = kElements * size,
                    .dtype = row.type, .shape = {kElements}};
    auto reader = ParallelReader::Start({path}, {read}, read.bytes, HostAllocator(),
                                        {.threads = 3, .chunk_bytes = kChunk}, nullptr);
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_TRUE((*reader)->Wait(0).ok());
    EXPECT_EQ((*reader)->Suspect(0), bad >= 0);
  }
}

TEST(ParallelReaderTest, AMissingFileFailsAtStart) {
  auto reader =
      ParallelReader::Start({"/nonexistent/x.safetensors"}, {}, 0, HostAllocator(), {}, nullptr);
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(reader.status().message(), HasSubstr("/nonexistent/x.safetensors"));
}

}  // namespace
}  // namespace dsv3::weights_parallel_reader_test
