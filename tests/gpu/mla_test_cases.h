// MLA test cases shared by the GPU tests: shapes, their MlaParams, and batches of sequences on
// shuffled paged block tables.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"

namespace dsv3::testing {

struct MlaShape {
  int64_t heads, nope, rope, v, lora;
};

// MLA's parameters at shape s (the mode left at its default).
MlaParams MlaParamsOf(const MlaShape& s) {
  MlaParams p;
  p.num_heads = s.heads;
  p.nope_dim = s.nope;
  p.rope_dim = s.rope;
  p.v_dim = s.v;
  p.kv_lora_rank = s.lora;
  p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(s.nope + s.rope));
  return p;
}

// A batch of sequences mixing prefill chunks (several new tokens, some after cached context)
// and decode steps (one token), with shuffled block tables.
struct MlaCase {
  AttentionBatch batch;
  std::vector<std::vector<int32_t>> tables;
  int64_t tokens = 0;
  int64_t num_blocks = 0;
};

MlaCase MakeMlaCase(std::mt19937& rng, const std::vector<std::pair<int32_t, int32_t>>& seqs,
                    int32_t block_size) {
  MlaCase c;
  c.batch.block_size = block_size;
  int32_t blocks_needed = 0;
  for (auto [ctx, n] : seqs) blocks_needed += (ctx + n + block_size - 1) / block_size;
  std::vector<int32_t> ids(blocks_needed + 3);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  c.num_blocks = static_cast<int64_t>(ids.size());
  c.tables.reserve(seqs.size());
  int32_t next = 0, token = 0;
  for (auto [ctx, n] : seqs) {
    const int32_t nb = (ctx + n + block_size - 1) / block_size;
    c.tables.emplace_back(ids.begin() + next, ids.begin() + next + nb);
    next += nb;
    c.batch.sequences.push_back({token, n, ctx, c.tables.back().data(), nb});
    for (int32_t i = 0; i < n; ++i) {
      const int32_t pos = ctx + i;
      c.batch.positions.push_back(pos);
      c.batch.slot_mapping.push_back(
          static_cast<int64_t>(c.tables.back()[pos / block_size]) * block_size + pos % block_size);
    }
    token += n;
  }
  c.tokens = token;
  return c;
}

}  // namespace dsv3::testing
