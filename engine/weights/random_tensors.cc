#include "engine/weights/random_tensors.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"

namespace dsv3 {

namespace {

// Element i of a stream: a counter-based hash (splitmix64), so any range of a tensor can be
// made on its own thread and the values do not depend on how the work was split.
uint64_t Hash(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Runs fill(begin, end) over [0, count) in chunks on up to 16 threads (full-size V3 experts are
// gigabytes per layer; one thread would take minutes for a benchmark's model).
template <typename Fill>
void ParallelFill(int64_t count, const Fill& fill) {
  constexpr int64_t kMinPerThread = int64_t{1} << 22;
  const int64_t threads = std::clamp<int64_t>(
      std::min<int64_t>(std::thread::hardware_concurrency(), count / kMinPerThread), 1, 16);
  if (threads == 1) return fill(0, count);
  std::vector<std::thread> workers;
  const int64_t per = (count + threads - 1) / threads;
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t begin = std::min(count, t * per), end = std::min(count, begin + per);
    workers.emplace_back([&fill, begin, end] { fill(begin, end); });
  }
  for (std::thread& w : workers) w.join();
}

// Uniform in [0, 1) from the hash's top 24 bits.
float Unit(uint64_t h) { return static_cast<float>(h >> 40) * (1.0f / 16777216.0f); }

}  // namespace

void* RandomTensors::Buffer(int slot, int64_t bytes) {
  Tensor& b = buffers_[slot];
  if (b.empty() || b.view().nbytes() < bytes) b = Tensor(staging_, DType::kU8, {bytes});
  return b.view().data;
}

void RandomTensors::MakeLinear(const std::string& prefix, int64_t n, int64_t k, bool fp8,
                               float scale, uint64_t seed) {
  held_.clear();
  const int64_t count = n * k;
  if (!fp8) {
    auto* w = static_cast<uint16_t*>(Buffer(0, count * 2));
    ParallelFill(count, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        w[i] = F32ToBf16(scale * (2.0f * Unit(Hash(seed, i)) - 1.0f));
      }
    });
    held_.push_back({prefix + ".weight", TensorView::Contiguous(w, DType::kBF16, {n, k})});
    return;
  }
  // 256 e4m3 codes drawn from a normal of standard deviation 64 (well inside e4m3's +-448); each
  // random byte picks one.
  constexpr float kSpread = 64.0f;
  std::array<uint8_t, 256> codes;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, kSpread);
  for (uint8_t& c : codes) c = F32ToFp8E4M3(std::clamp(normal(rng), -448.0f, 448.0f));
  auto* q = static_cast<uint8_t*>(Buffer(0, count));
  const int64_t words = (count + 7) / 8;
  ParallelFill(words, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t h = Hash(seed, i);
      for (int64_t b = 0; b < 8 && i * 8 + b < count; ++b) q[i * 8 + b] = codes[(h >> (8 * b)) & 255];
    }
  });
  const int64_t sn = ScaleBlocks(n), sk = ScaleBlocks(k);
  auto* s = static_cast<float*>(Buffer(1, sn * sk * 4));
  std::fill(s, s + sn * sk, scale / kSpread);
  held_.push_back({prefix + ".weight", TensorView::Contiguous(q, DType::kF8E4M3, {n, k})});
  held_.push_back(
      {prefix + ".weight_scale_inv", TensorView::Contiguous(s, DType::kF32, {sn, sk})});
}

void RandomTensors::MakeDense(const std::string& name, std::span<const int64_t> shape, float mean,
                              float scale, uint64_t seed) {
  held_.clear();
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  const bool bf16 = shape.size() >= 2;
  void* data = Buffer(0, count * (bf16 ? 2 : 4));
  ParallelFill(count, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = mean + scale * (2.0f * Unit(Hash(seed, i)) - 1.0f);
      if (bf16) {
        static_cast<uint16_t*>(data)[i] = F32ToBf16(v);
      } else {
        static_cast<float*>(data)[i] = v;
      }
    }
  });
  held_.push_back({name, TensorView::Contiguous(data, bf16 ? DType::kBF16 : DType::kF32, shape)});
}

bool RandomTensors::Has(std::string_view name) const {
  return std::any_of(held_.begin(), held_.end(), [&](const Held& h) { return h.name == name; });
}

std::string RandomTensors::FileOf(std::string_view name) const {
  return Has(name) ? "(random weights)" : "";
}

absl::StatusOr<TensorView> RandomTensors::Get(std::string_view name) const {
  for (const Held& h : held_) {
    if (h.name == name) return h.view;
  }
  return absl::NotFoundError(absl::StrCat("random weights: ", std::string(name), " was not made"));
}

absl::StatusOr<LinearWeight> LoadRandomLinear(Backend& backend, int64_t n, int64_t k, bool fp8,
                                              float scale, uint64_t seed,
                                              std::vector<Tensor>& storage) {
  RandomTensors random(backend.staging_allocator());
  random.MakeLinear("random", n, k, fp8, scale, seed);
  return backend.LoadLinear(random, "random", n, k, Slice2D{}, storage);
}

}  // namespace dsv3
