// Random MoE routing for tests of the expert ops (op table, CUDA op and grouped-GEMM tests).
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace dsv3::testing {

// Each of t tokens picks top_k distinct experts of [0, experts) at random: ids [t * top_k].
inline std::vector<int32_t> RandomRouting(int64_t t, int64_t top_k, int64_t experts,
                                          std::mt19937& rng) {
  std::vector<int32_t> ids(t * top_k);
  std::vector<int32_t> perm(experts);
  for (int64_t i = 0; i < t; ++i) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::copy_n(perm.begin(), top_k, ids.begin() + i * top_k);
  }
  return ids;
}

// Routing weights [t * top_k]: every token's j-th pick weighs weight_of_pick(j).
template <typename F>
std::vector<float> PickWeights(int64_t t, int64_t top_k, F weight_of_pick) {
  std::vector<float> w(t * top_k);
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < top_k; ++j) w[i * top_k + j] = weight_of_pick(j);
  }
  return w;
}

}  // namespace dsv3::testing
