// ParallelReader: reads a ReadPlan's ranges from the shard files with several threads (pread,
// in chunks) into one ring of staging memory, ahead of a consumer that takes them in plan order.
// The staging memory comes from the backend (pinned host memory on CUDA, so the copies to the
// GPU are DMA from it; plain aligned memory on the CPU).
//
// The reader threads also scan each chunk for NaN/Inf bit patterns of its tensor's dtype
// (value_check.h), so that the consumer runs the exact value checks only on tensors flagged here
// (Suspect) instead of scanning every byte again on its one thread.
//
// Protocol, one consumer thread: Wait(i) for i = 0, 1, ... in order (several may be held at
// once), Release(i) when done with every read up to i. Reads ahead of the consumer fill the
// ring; a read waits for ring space, so memory stays bounded by the ring whatever the
// checkpoint's size. Every read is aligned to 4 KiB in the file and the ring, which O_DIRECT
// needs and buffered reads do not mind.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/backend/tensor.h"
#include "engine/weights/load_progress.h"
#include "engine/weights/read_plan.h"

namespace dsv3 {

struct ReaderOptions {
  int threads = 8;                          // concurrent preads
  int64_t chunk_bytes = int64_t{32} << 20;  // one pread (rounded to 4 KiB)
  // The ring: at most what the plan reads, at least twice the largest request (a weight and
  // its scales are held together while the next request's reads land), so a huge tensor (V3's
  // 1.85 GB embedding at TP=1) still fits.
  int64_t staging_bytes = int64_t{1} << 30;
  // O_DIRECT: bypass the page cache (cold loads of checkpoints larger than the host's memory).
  // A file system that refuses it is read buffered.
  bool direct_io = false;
};

// What ModelWeights::Load takes: how to read, and where to report progress (may be null).
struct WeightLoadOptions {
  ReaderOptions reader;
  LoadProgress* progress = nullptr;
};

class ParallelReader {
 public:
  // Opens `paths` (read-only) and starts reading `plan.reads` (their `file` indexes `paths`).
  // `largest_request` is the most bytes the consumer holds at once (ring sizing). Progress, if
  // given, gets every read's bytes as they arrive (it should be Begun with plan.file_bytes).
  static absl::StatusOr<std::unique_ptr<ParallelReader>> Start(
      const std::vector<std::string>& paths, std::vector<TensorRead> reads,
      uint64_t largest_request, Allocator* staging, const ReaderOptions& options,
      LoadProgress* progress);
  ~ParallelReader();  // stops and joins the threads; frees the ring
  ParallelReader(const ParallelReader&) = delete;
  ParallelReader& operator=(const ParallelReader&) = delete;

  // Blocks until read i is staged; its first byte (valid until Release(j >= i)). DataLoss or
  // Internal naming the file when a read failed (a short file, an I/O error).
  absl::StatusOr<const uint8_t*> Wait(size_t i);
  // After Wait(i): whether read i's bytes hold a NaN or infinite value of its dtype (a NaN code
  // for FP8). False is a guarantee; true means the consumer must check (the bad value may lie
  // outside its slice).
  bool Suspect(size_t i);
  // The consumer is done with reads [0, i].
  void Release(size_t i);

  // The ring Start allocates for these arguments.
  static uint64_t RingBytes(const std::vector<TensorRead>& reads, uint64_t largest_request,
                            const ReaderOptions& options);
  uint64_t ring_bytes() const { return capacity_; }
  bool direct_io() const { return direct_io_; }

 private:
  struct Read {
    TensorRead plan;
    uint64_t aligned_offset = 0;  // 4 KiB-aligned start in the file
    uint64_t span = 0;            // aligned bytes read
    uint64_t ring_pos = 0;        // virtual ring offset (position = ring_pos % capacity_)
    int64_t chunks_left = 0;
    bool reserved = false;
    bool ready = false;
    bool suspect = false;  // a scan found a non-finite value in the read's bytes
  };
  // One pread: aligned file bytes [begin, end) of read `read` into `dest`.
  struct Chunk {
    size_t read = 0;
    int file = 0;
    uint64_t begin = 0, end = 0;
    uint8_t* dest = nullptr;
    uint64_t wanted_end = 0;  // the read's last wanted byte + 1: EOF before it is DataLoss
    uint64_t useful = 0;      // bytes of the chunk inside the read's plan (progress)
    const std::string* tensor = nullptr;
    DType dtype = DType::kU8;   // of the read's elements, for the value scan
    uint64_t plan_offset = 0;   // the read's first wanted byte (its element 0)
  };

  ParallelReader() = default;
  void Run();
  // Takes the next chunk (reserving its read's ring space first); false when none is left or
  // the reader stops.
  bool NextChunk(Chunk* chunk);
  absl::Status ReadChunk(const Chunk& chunk) const;
  // Whether a non-finite value lies among the elements wholly inside the chunk's wanted bytes.
  static bool ScanChunk(const Chunk& chunk);
  // The same for the elements that straddle a boundary between two of the read's chunks (read
  // complete).
  bool ScanStraddlers(const Read& read) const;
  uint8_t* RingAt(uint64_t ring_pos) const { return ring_ + ring_pos % capacity_; }

  std::vector<std::string> paths_;
  std::vector<int> fds_;
  Allocator* staging_ = nullptr;
  void* allocation_ = nullptr;
  uint8_t* ring_ = nullptr;  // 4 KiB-aligned
  uint64_t capacity_ = 0;
  uint64_t chunk_bytes_ = 0;
  bool direct_io_ = false;
  LoadProgress* progress_ = nullptr;
  std::vector<std::thread> threads_;

  absl::Mutex mu_;
  absl::CondVar cv_;  // a read became ready, ring space was released, an error, stop
  std::vector<Read> reads_ ABSL_GUARDED_BY(mu_);
  size_t next_read_ ABSL_GUARDED_BY(mu_) = 0;      // whose chunks are handed out next
  uint64_t next_offset_ ABSL_GUARDED_BY(mu_) = 0;  // its next chunk's aligned file offset
  uint64_t head_ ABSL_GUARDED_BY(mu_) = 0;         // virtual end of the reserved ring
  uint64_t tail_ ABSL_GUARDED_BY(mu_) = 0;         // virtual start of the unreleased ring
  size_t released_ ABSL_GUARDED_BY(mu_) = 0;       // reads [0, released_) are released
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace dsv3
