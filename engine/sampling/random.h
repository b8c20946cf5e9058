// SplitMix64 (Steele, Lea and Flood, 2014; Vigna's splitmix64.c): a 64-bit generator whose output
// is fixed by its definition, unlike std:: distributions, whose algorithms differ between standard
// libraries. Each sequence owns one, so its draws never depend on the rest of the batch.
#pragma once

#include <cstdint>

namespace dsv3 {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, 1) with 53 random bits: the top bits of Next() scaled by 2^-53.
  double NextUniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace dsv3
