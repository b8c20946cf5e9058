#include "engine/kv_sizing.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/engine.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model.h"
#include "engine/model_runner.h"
#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

std::string GiB(int64_t bytes) { return absl::StrFormat("%.2f GiB", bytes / double(1 << 30)); }

// The dummy prefill: one sequence of `tokens` new tokens from position 0 in blocks [0, n).
// Token ids spread over the vocabulary, so routing spreads over the experts as real text does.
void AddProfileSequence(ForwardBatch& batch, int32_t tokens, int32_t first_block,
                        int32_t block_size, int64_t vocab) {
  SequenceSlice s;
  s.token_begin = batch.num_tokens();
  s.num_tokens = tokens;
  s.context_begin = 0;
  for (int32_t b = 0; b < (tokens + block_size - 1) / block_size; ++b) {
    s.block_table.push_back(first_block + b);
  }
  for (int32_t i = 0; i < tokens; ++i) {
    batch.token_ids.push_back(static_cast<int32_t>((int64_t{s.token_begin + i} * 7919 + 1) % vocab));
  }
  batch.sequences.push_back(std::move(s));
}

}  // namespace

std::string KvSizingFlag(const EngineConfig& c) {
  if (c.num_kv_blocks > 0) return absl::StrCat("--num-kv-blocks ", c.num_kv_blocks);
  if (c.kv_memory_bytes > 0) return absl::StrCat("--kv-memory-mb ", c.kv_memory_bytes >> 20);
  return absl::StrCat("--gpu-memory-utilization ", c.gpu_memory_utilization);
}

absl::StatusOr<int64_t> ResolveMaxModelLen(const EngineConfig& config,
                                           int64_t max_position_embeddings,
                                           int64_t kv_capacity_tokens, std::string* warning) {
  warning->clear();
  const std::string kv_flag = KvSizingFlag(config);
  if (config.max_model_len > 0) {
    if (config.max_model_len > max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--max-model-len ", config.max_model_len, " is more than the model's ",
          "max_position_embeddings (", max_position_embeddings,
          ", config.json); decrease --max-model-len"));
    }
    if (config.max_model_len > kv_capacity_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--max-model-len ", config.max_model_len,
          " is more than the maximum number of tokens the KV cache can hold (",
          kv_capacity_tokens, ", sized by ", kv_flag,
          "); increase --gpu-memory-utilization, --kv-memory-mb or --num-kv-blocks, or "
          "decrease --max-model-len"));
    }
    return config.max_model_len;
  }
  if (kv_capacity_tokens < max_position_embeddings) {
    *warning = absl::StrCat(
        "the context limit is ", kv_capacity_tokens, " tokens, what the KV cache holds (",
        kv_flag, "), not the model's max_position_embeddings ", max_position_embeddings,
        "; give the KV cache more memory, or set --max-model-len to make this limit explicit");
    return kv_capacity_tokens;
  }
  return max_position_embeddings;
}

absl::StatusOr<int64_t> KvBytesForGpuMemory(double fraction, const GpuMemoryUse& use) {
  const int64_t allowed = static_cast<int64_t>(fraction * static_cast<double>(use.total));
  if (allowed > use.free_at_start) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gpu-memory-utilization ", fraction, " asks for ", GiB(allowed), " of the device's ",
        GiB(use.total), ", but only ", GiB(use.free_at_start),
        " were free when this process started (other processes hold the rest); decrease "
        "--gpu-memory-utilization or size the KV cache with --kv-memory-mb"));
  }
  const int64_t kv = allowed - use.ours - use.activation_peak - use.graph_reserve;
  if (kv <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gpu-memory-utilization ", fraction, " allows ", GiB(allowed), ", and weights and "
        "workspaces (", GiB(use.ours), "), the peak activations (", GiB(use.activation_peak),
        ") and the CUDA graph reserve (", GiB(use.graph_reserve), ", --cuda-graph-memory-mb) "
        "leave nothing for the KV cache; increase --gpu-memory-utilization, decrease "
        "--max-batched-tokens or --cuda-graph-memory-mb, or use more --tp ranks"));
  }
  return kv;
}

absl::StatusOr<int64_t> KvBlocksForGpuMemory(ModelRunner& runner, const EngineConfig& config,
                                             bool mtp_layer, GpuMemoryUse* use) {
  DeepseekV3Model& model = runner.model();
  Backend& backend = model.backend();
  const ModelConfig& mc = model.config();
  const std::optional<DeviceMemory> start = backend.MemoryInfo();
  if (!start) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--gpu-memory-utilization applies to GPU backends; the ", backend.name(),
        " backend sizes its KV cache by --kv-memory-mb or --num-kv-blocks"));
  }
  // A share more than was free fails before the profile, which would take that memory.
  DSV3_RETURN_IF_ERROR(KvBytesForGpuMemory(
      config.gpu_memory_utilization, {.total = start->total, .free_at_start = start->free_at_start})
                           .status());
  const int32_t bs = config.block_size;
  const int64_t block_bytes = KvCache::BytesPerBlock(mc, bs, backend.kv_cache_dtype(), mtp_layer);
  const int64_t context = config.max_model_len > 0 ? config.max_model_len
                                                     : mc.max_position_embeddings;
  // The dummy steps: a prefill at the step's token budget, a decode at the seat limit.
  const int32_t prefill_tokens = static_cast<int32_t>(
      std::min<int64_t>(config.scheduler.max_batched_tokens, std::max<int64_t>(context, 1)));
  const int32_t decode_seqs = config.scheduler.max_running_seqs;
  const int32_t prefill_blocks = (prefill_tokens + bs - 1) / bs;

  ForwardBatch prefill, decode;
  AddProfileSequence(prefill, prefill_tokens, 0, bs, mc.vocab_size);
  // The engine asks for the logits of every sequence's last token (and of each draft).
  const int32_t logit_rows = std::min<int32_t>(
      prefill_tokens, decode_seqs * (1 + config.scheduler.speculative_tokens));
  for (int32_t r = prefill_tokens - logit_rows; r < prefill_tokens; ++r) {
    prefill.logits_rows.push_back(r);
  }
  for (int32_t s = 0; s < decode_seqs; ++s) {
    AddProfileSequence(decode, 1, prefill_blocks + s, bs, mc.vocab_size);
    decode.logits_rows.push_back(s);
  }

  DSV3_RETURN_IF_ERROR(runner.AllocateCache(prefill_blocks + decode_seqs, bs, mtp_layer));
  const int64_t reserved_before = backend.MemoryInfo()->pool_reserved;
  backend.ResetPeakMemory();
  std::vector<float> logits;
  DSV3_RETURN_IF_ERROR(runner.Execute(prefill, logits));
  DSV3_RETURN_IF_ERROR(runner.Execute(decode, logits));
  backend.Synchronize();
  int64_t peak = std::max<int64_t>(0, backend.MemoryInfo()->pool_peak - reserved_before);
  // A prefill chunk late in a long context up-projects every context row to per-head K and V in
  // the naive MLA form; the dummy prefill saw `prefill_tokens` of them, the limit allows
  // `context` (latents [rows, kv_dim], K and V [rows, heads * (nope + v)], slots [rows] I32).
  const int64_t heads = mc.num_attention_heads / std::max(1, runner.world_size());
  const int64_t row_bytes =
      (mc.kv_cache_dim() + heads * (mc.qk_nope_head_dim + mc.v_head_dim)) *
          DTypeSize(backend.activation_dtype()) + 4;
  peak += std::max<int64_t>(0, context - prefill_tokens) * row_bytes;
  DSV3_RETURN_IF_ERROR(runner.AllocateCache(0, bs, mtp_layer));  // and the pool trimmed

  const DeviceMemory now = *backend.MemoryInfo();
  use->total = now.total;
  use->free_at_start = now.free_at_start;
  use->ours = std::max<int64_t>(0, now.free_at_start - now.free);
  use->activation_peak = peak;
  use->graph_reserve = config.graph_memory_bytes;
  DSV3_ASSIGN_OR_RETURN(const int64_t kv_bytes,
                        KvBytesForGpuMemory(config.gpu_memory_utilization, *use));
  // Block ids are int32 (BlockPool): a pool past that is capped, not failed.
  return std::min<int64_t>(kv_bytes / block_bytes, std::numeric_limits<int32_t>::max());
}

}  // namespace dsv3
