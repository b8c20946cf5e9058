// One step under data-parallel attention (a model loaded with dp_attention), on every rank: rank
// 0's batch holds every attention rank's sequences (SequenceSlice::attention_rank), each rank runs
// its own part (SplitForAttentionRank) in its own cache, and what rank 0 samples from (logits,
// hidden states) comes back to it in the batch's order through AllToAllV. A rank without a
// sequence still runs the step: the MoE layers' exchanges need every rank.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/backend/backend.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"
#include "engine/parallel/communicator.h"

namespace dsv3 {

class DecodeGraphRunner;
class DeepseekV3Model;

// The main model's step: the logits of batch.logits_rows on rank 0 ([rows, V]; the other ranks
// get `logits` empty) and, when batch.hidden_rows is not empty, the final hidden states of those
// rows into `hidden` on rank 0 ([rows, H]; every rank then takes part in their exchange, and
// `hidden` may be null anywhere).
// With `graphs`, a step every rank's part of which is a graph step (decode: graphs->
// DataParallelShape) runs through it at that one shape, every rank padded to the same rows, the
// MoE layers' capacity (max_rank_tokens) those rows, so every rank captures and replays the same
// collectives; other steps, and every step without `graphs`, call the model's Forward with
// max_rank_tokens the most tokens of any rank, which picks the MoE layers' dispatch layout
// (expert_parallel_moe.h). The exchanges of the outputs are never in a graph: they come to the
// host from each rank's step and go back to the device for the all-to-all. Fails when a
// collective fails.
absl::Status ForwardDataParallel(DeepseekV3Model& model, DecodeGraphRunner* graphs,
                                 Communicator& comm, const ForwardBatch& batch, KvCache& cache,
                                 std::vector<float>& logits, MlaMode mla_mode = MlaMode::kAuto,
                                 std::vector<float>* hidden = nullptr);

// The MTP module's step (DeepseekV3Model::ForwardMtp) the same way: `hidden` ([T, H], a row per
// row of `batch`) is rank 0's (the others pass it empty), and each rank gets its own sequences'
// rows from it; the logits and the MTP output states of batch.logits_rows come back on rank 0
// ([rows, V] and [rows, H]; empty elsewhere). Runs eagerly. Fails when a collective fails, or
// as ForwardMtp does.
absl::Status ForwardMtpDataParallel(DeepseekV3Model& model, Communicator& comm,
                                    const ForwardBatch& batch, absl::Span<const float> hidden,
                                    KvCache& cache, std::vector<float>& logits,
                                    std::vector<float>& hidden_out);

}  // namespace dsv3
