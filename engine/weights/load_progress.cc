#include "engine/weights/load_progress.h"

#include <filesystem>

#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

namespace {

double Gb(uint64_t bytes) { return static_cast<double>(bytes) / 1e9; }

// "4.29 GB", "12.6 MB": checkpoints run from a few MB (fixtures) to 690 GB.
std::string Size(uint64_t bytes) {
  return bytes >= 1000000000 ? fmt::format("{:.2f} GB", Gb(bytes))
                             : fmt::format("{:.1f} MB", static_cast<double>(bytes) / 1e6);
}

// GB/s of `bytes` over `seconds`, 0 for no time at all.
double Rate(uint64_t bytes, double seconds) { return seconds > 0 ? Gb(bytes) / seconds : 0.0; }

}  // namespace

void LoadProgress::Begin(std::vector<std::string> names, std::vector<uint64_t> expected) {
  absl::MutexLock lock(&mu_);
  shards_.clear();
  bytes_read_ = bytes_expected_ = 0;
  shards_done_ = shards_total_ = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const uint64_t bytes = i < expected.size() ? expected[i] : 0;
    shards_.push_back({std::filesystem::path(names[i]).filename().string(), bytes, 0});
    bytes_expected_ += bytes;
    if (bytes > 0) ++shards_total_;
  }
  start_ = absl::Now();
  started_ = true;
  finished_ = false;
}

void LoadProgress::Add(int shard, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  Shard& s = shards_.at(shard);
  const absl::Time now = absl::Now();
  if (s.read == 0) s.first = now;
  s.read += bytes;
  bytes_read_ += bytes;
  if (bytes == 0 || s.read != s.expected) return;
  ++shards_done_;
  const double shard_s = absl::ToDoubleSeconds(now - s.first);
  const double total_s = absl::ToDoubleSeconds(now - start_);
  const double rate = Rate(bytes_read_, total_s);
  const double eta = rate > 0 ? Gb(bytes_expected_ - bytes_read_) / rate : 0.0;
  spdlog::info(
      "loading: shard {}/{} {} read: {} in {:.2f} s ({:.2f} GB/s); {} of {} ({:.1f}%), "
      "{:.2f} GB/s overall, ETA {:.0f} s",
      shards_done_, shards_total_, s.name, Size(s.read), shard_s, Rate(s.read, shard_s),
      Size(bytes_read_), Size(bytes_expected_),
      bytes_expected_ > 0 ? 100.0 * static_cast<double>(bytes_read_) / bytes_expected_ : 100.0,
      rate, eta);
}

void LoadProgress::Finish() {
  absl::MutexLock lock(&mu_);
  end_ = absl::Now();
  finished_ = true;
  const double seconds = absl::ToDoubleSeconds(end_ - start_);
  spdlog::info("loading: read {} from {} shards in {:.2f} s ({:.2f} GB/s)", Size(bytes_read_),
               shards_total_, seconds, Rate(bytes_read_, seconds));
}

LoadProgress::Snapshot LoadProgress::Get() const {
  absl::MutexLock lock(&mu_);
  Snapshot s;
  s.bytes_read = bytes_read_;
  s.bytes_expected = bytes_expected_;
  s.shards_done = shards_done_;
  s.shards_total = shards_total_;
  s.started = started_;
  s.finished = finished_;
  if (started_) s.seconds = absl::ToDoubleSeconds((finished_ ? end_ : absl::Now()) - start_);
  return s;
}

}  // namespace dsv3
