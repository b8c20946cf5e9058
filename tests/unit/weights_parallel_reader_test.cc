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

namespace dsv3 {
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

TEST(ParallelReaderTest, AMissingFileFailsAtStart) {
  auto reader =
      ParallelReader::Start({"/nonexistent/x.safetensors"}, {}, 0, HostAllocator(), {}, nullptr);
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(reader.status().message(), HasSubstr("/nonexistent/x.safetensors"));
}

}  // namespace
}  // namespace dsv3
