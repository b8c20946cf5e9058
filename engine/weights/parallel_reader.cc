#include "engine/weights/parallel_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/weights/value_check.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

namespace {

// O_DIRECT's alignment of file offsets, lengths and buffers (the largest logical block size in
// use; 512-byte devices accept it too).
constexpr uint64_t kAlign = 4096;

uint64_t AlignDown(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Opens `path` read-only, with O_DIRECT when asked and the file system allows it; *direct says
// whether it did. Buffered files are read ahead sequentially (fadvise doubles the window).
absl::StatusOr<int> OpenForReading(const std::string& path, bool want_direct, bool* direct) {
  *direct = false;
  if (want_direct) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd >= 0) {
      *direct = true;
      return fd;
    }
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", strerror(errno)));
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return fd;
}

}  // namespace

uint64_t ParallelReader::RingBytes(const std::vector<TensorRead>& reads, uint64_t largest_request,
                                   const ReaderOptions& options) {
  // Never more than the whole plan (a small model needs no 1 GiB of pinned memory), never less
  // than two of the largest request (each read may gain up to 2 * kAlign of alignment; a request
  // has at most two reads).
  uint64_t total = 0;
  for (const TensorRead& read : reads) total += read.bytes + 2 * kAlign;
  return AlignUp(std::max(std::min<uint64_t>(options.staging_bytes, total),
                          2 * (largest_request + 4 * kAlign)),
                 kAlign);
}

absl::StatusOr<std::unique_ptr<ParallelReader>> ParallelReader::Start(
    const std::vector<std::string>& paths, std::vector<TensorRead> reads, uint64_t largest_request,
    Allocator* staging, const ReaderOptions& options, LoadProgress* progress) {
  std::unique_ptr<ParallelReader> r(new ParallelReader());
  r->paths_ = paths;
  r->progress_ = progress;
  r->staging_ = staging;
  r->chunk_bytes_ = AlignUp(std::max<int64_t>(options.chunk_bytes, kAlign), kAlign);
  bool all_direct = options.direct_io;
  for (const std::string& path : paths) {
    bool direct = false;
    absl::StatusOr<int> fd = OpenForReading(path, options.direct_io, &direct);
    if (!fd.ok()) return fd.status();  // the destructor closes the ones already open
    r->fds_.push_back(*fd);
    all_direct = all_direct && direct;
  }
  r->direct_io_ = all_direct;
  if (options.direct_io && !all_direct) {
    spdlog::warn(
        "loading: the file system refused O_DIRECT for some shards; reading them buffered");
  }

  r->capacity_ = RingBytes(reads, largest_request, options);
  try {
    r->allocation_ = staging->Allocate(static_cast<int64_t>(r->capacity_ + kAlign));
  } catch (const std::bad_alloc&) {
    r->allocation_ = nullptr;
  }
  if (r->allocation_ == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", r->capacity_, " bytes of staging memory for loading"));
  }
  r->ring_ =
      reinterpret_cast<uint8_t*>(AlignUp(reinterpret_cast<uintptr_t>(r->allocation_), kAlign));

  {
    absl::MutexLock lock(&r->mu_);
    for (TensorRead& plan : reads) {
      Read& read = r->reads_.emplace_back();
      if (plan.bytes > 0) {
        read.aligned_offset = AlignDown(plan.offset, kAlign);
        read.span = AlignUp(plan.offset + plan.bytes, kAlign) - read.aligned_offset;
      } else {
        read.reserved = read.ready = true;  // nothing to read, no ring space
      }
      read.plan = std::move(plan);
    }
  }
  const int threads = std::max(1, options.threads);
  for (int i = 0; i < threads; ++i) r->threads_.emplace_back([raw = r.get()] { raw->Run(); });
  return r;
}

ParallelReader::~ParallelReader() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    cv_.SignalAll();
  }
  for (std::thread& t : threads_) t.join();
  for (int fd : fds_) ::close(fd);
  if (allocation_ != nullptr) staging_->Free(allocation_);
}

bool ParallelReader::NextChunk(Chunk* chunk) {
  absl::MutexLock lock(&mu_);
  while (true) {
    while (next_read_ < reads_.size() && reads_[next_read_].span == 0) ++next_read_;
    if (stop_ || !error_.ok() || next_read_ == reads_.size()) return false;
    Read& r = reads_[next_read_];
    if (!r.reserved) {
      // Ring space in plan order: a read never straddles the ring's end (it starts over at the
      // beginning instead), and waits until the consumer has released enough.
      uint64_t start = head_;
      if (start % capacity_ + r.span > capacity_) start = AlignUp(start, capacity_);
      if (start + r.span - tail_ > capacity_) {
        cv_.Wait(&mu_);
        continue;
      }
      r.ring_pos = start;
      r.reserved = true;
      r.chunks_left = static_cast<int64_t>((r.span + chunk_bytes_ - 1) / chunk_bytes_);
      head_ = start + r.span;
      next_offset_ = r.aligned_offset;
    }
    chunk->read = next_read_;
    chunk->file = r.plan.file;
    chunk->begin = next_offset_;
    chunk->end = std::min(next_offset_ + chunk_bytes_, r.aligned_offset + r.span);
    chunk->dest = RingAt(r.ring_pos) + (chunk->begin - r.aligned_offset);
    chunk->wanted_end = r.plan.offset + r.plan.bytes;
    chunk->useful = std::min(chunk->end, chunk->wanted_end) - std::max(chunk->begin, r.plan.offset);
    chunk->tensor = &r.plan.name;
    chunk->dtype = r.plan.dtype;
    chunk->plan_offset = r.plan.offset;
    next_offset_ = chunk->end;
    if (next_offset_ == r.aligned_offset + r.span) ++next_read_;
    return true;
  }
}

absl::Status ParallelReader::ReadChunk(const Chunk& c) const {
  const std::string& path = paths_[c.file];
  const uint64_t want = c.end - c.begin;
  uint64_t done = 0;
  while (done < want) {
    const ssize_t n =
        ::pread(fds_[c.file], c.dest + done, want - done, static_cast<off_t>(c.begin + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::InternalError(absl::StrCat(path, ": read of ", want - done, " bytes at offset ",
                                              c.begin + done, " failed: ", strerror(errno)));
    }
    if (n == 0) break;  // end of file: only the alignment padding may be missing
    done += static_cast<uint64_t>(n);
  }
  if (c.begin + done < std::min(c.end, c.wanted_end)) {
    return absl::DataLossError(absl::StrCat(path, ": file ends at byte ", c.begin + done,
                                            ", inside tensor '", *c.tensor,
                                            "' (the file changed after it was opened)"));
  }
  return absl::OkStatus();
}

bool ParallelReader::ScanChunk(const Chunk& c) {
  const uint64_t size = static_cast<uint64_t>(DTypeSize(c.dtype));
  const uint64_t lo = std::max(c.begin, c.plan_offset), hi = std::min(c.end, c.wanted_end);
  if (size == 0 || hi <= lo) return false;
  // Elements [first, last) of the read start at or after lo and end at or before hi.
  const uint64_t first = (lo - c.plan_offset + size - 1) / size;
  const uint64_t last = (hi - c.plan_offset) / size;
  if (last <= first) return false;
  return AnyNonFinite(c.dest + (c.plan_offset + first * size - c.begin),
                      static_cast<int64_t>(last - first), c.dtype);
}

bool ParallelReader::ScanStraddlers(const Read& r) const {
  const uint64_t size = static_cast<uint64_t>(DTypeSize(r.plan.dtype));
  if (size <= 1) return false;
  const uint8_t* base = RingAt(r.ring_pos);
  const uint64_t plan_end = r.plan.offset + r.plan.bytes;
  for (uint64_t cut = r.aligned_offset + chunk_bytes_; cut < r.aligned_offset + r.span;
       cut += chunk_bytes_) {
    if (cut <= r.plan.offset || cut >= plan_end) continue;
    const uint64_t start = r.plan.offset + (cut - r.plan.offset) / size * size;
    if (start < cut && start + size <= plan_end &&
        AnyNonFinite(base + (start - r.aligned_offset), 1, r.plan.dtype)) {
      return true;
    }
  }
  return false;
}

void ParallelReader::Run() {
  Chunk chunk;
  while (NextChunk(&chunk)) {
    const absl::Status status = ReadChunk(chunk);
    // The scan runs here, beside the reads, on bytes still in this core's cache.
    const bool suspect = status.ok() && ScanChunk(chunk);
    if (status.ok() && progress_ != nullptr) progress_->Add(chunk.file, chunk.useful);
    absl::MutexLock lock(&mu_);
    if (!status.ok()) {
      if (error_.ok()) error_ = status;
      cv_.SignalAll();
      return;
    }
    Read& read = reads_[chunk.read];
    read.suspect = read.suspect || suspect;
    if (--read.chunks_left == 0) {
      read.suspect = read.suspect || ScanStraddlers(read);
      read.ready = true;
      cv_.SignalAll();
    }
  }
}

bool ParallelReader::Suspect(size_t i) {
  absl::MutexLock lock(&mu_);
  return reads_.at(i).suspect;
}

absl::StatusOr<const uint8_t*> ParallelReader::Wait(size_t i) {
  absl::MutexLock lock(&mu_);
  while (!reads_.at(i).ready && error_.ok()) cv_.Wait(&mu_);
  if (!reads_[i].ready) return error_;
  const Read& r = reads_[i];
  if (r.span == 0) return ring_;
  return RingAt(r.ring_pos) + (r.plan.offset - r.aligned_offset);
}

void ParallelReader::Release(size_t i) {
  absl::MutexLock lock(&mu_);
  released_ = std::max(released_, i + 1);
  // The oldest read still held (or reserved ahead) starts the used part of the ring.
  size_t next = released_;
  while (next < reads_.size() && reads_[next].span == 0) ++next;
  tail_ = next < reads_.size() && reads_[next].reserved ? reads_[next].ring_pos : head_;
  cv_.SignalAll();
}

}  // namespace dsv3
