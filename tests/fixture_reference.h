// The transformers references of a fixture (tests/data/fixtures/<name>-ref.tar.xz, made by
// tools/fixtures/make_fixtures.py) and the error measure the golden tests use.
#pragma once

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <algorithm>

#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace dsv3::testing {

struct FixtureReference {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> continuations;  // greedy, stopping at EOS
  int max_new_tokens = 0;
};

// `fixture` without the -fp8/-bf16 suffix, e.g. "tiny".
inline FixtureReference LoadFixtureReference(const std::string& fixture) {
  std::ifstream in(FixturePath(fixture + "-ref/prompts.json"));
  const auto j = nlohmann::json::parse(in);
  return {j["prompts"].get<std::vector<std::vector<int32_t>>>(),
          j["continuations"].get<std::vector<std::vector<int32_t>>>(),
          j["max_new_tokens"].get<int>()};
}

// Every fixture checkpoint, for tests parameterized over them.
inline std::vector<std::string> AllFixtureCheckpoints() {
  return {"tiny-fp8",  "ragged-fp8",  "noqlora-fp8",  "smooth-fp8",
          "tiny-bf16", "ragged-bf16", "noqlora-bf16", "smooth-bf16"};
}

// The gtest parameter name of a checkpoint: "tiny-fp8" -> "tiny_fp8".
inline std::string FixtureTestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

// ||got - want|| / ||want|| (Frobenius), in double.
inline double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

}  // namespace dsv3::testing
