// A one-sequence attention step as the MLA input tests make it (the op table's rows and the GPU
// ops test), and RoPE's plain inverse frequencies.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/backend/backend.h"

namespace dsv3::testing {

// t new tokens of one sequence after `context` cached positions, on a block table handed out from
// the top (block i of the sequence is block blocks - 1 - i): positions, slots, zero token ids.
// `table` receives the block ids and must outlive the batch.
inline AttentionBatch OneSequenceStep(int64_t t, int32_t context, int32_t block_size,
                                      int64_t kv_lora_rank, int64_t rope_dim,
                                      std::vector<int32_t>& table) {
  const int32_t blocks = (context + static_cast<int32_t>(t) + block_size - 1) / block_size;
  table.resize(blocks);
  for (int32_t i = 0; i < blocks; ++i) table[i] = blocks - 1 - i;
  AttentionBatch batch;
  batch.block_size = block_size;
  batch.kv_lora_rank = kv_lora_rank;
  batch.rope_dim = rope_dim;
  batch.sequences.push_back({0, static_cast<int32_t>(t), context, table.data(), blocks});
  for (int32_t j = 0; j < t; ++j) {
    const int32_t pos = context + j;
    batch.positions.push_back(pos);
    batch.slot_mapping.push_back(int64_t{table[pos / block_size]} * block_size + pos % block_size);
    batch.token_ids.push_back(0);
  }
  return batch;
}

// RoPE's inverse frequencies [rope_dim / 2]: 10000^(-2i / rope_dim).
inline std::vector<float> RopeInvFreq(int64_t rope_dim) {
  std::vector<float> inv_freq(rope_dim / 2);
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    inv_freq[i] = std::pow(10000.0f, -2.0f * static_cast<float>(i) / rope_dim);
  }
  return inv_freq;
}

}  // namespace dsv3::testing
