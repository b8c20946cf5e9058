// DeepseekV3Model: the DeepSeek-V3 graph of SPEC section 3, written once against the Backend op
// interface. One Forward call runs one step of a flattened batch (several sequences, each with
// any number of new tokens), writes their latents into the paged KV cache and returns the logits
// (and final hidden states) of the requested rows. ForwardMtp runs the MTP module the same way over
// its own layer of the cache.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend/backend.h"
#include "engine/config/model_config.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model_weights.h"
#include "engine/model/rope.h"
#include "engine/parallel/communicator.h"
#include "engine/weights/checkpoint.h"

namespace dsv3 {

class DeepseekV3Model {
 public:
  // Reads config.json and the safetensors of `model_dir` and loads the weights into `backend`
  // (which must outlive the model).
  static absl::StatusOr<std::unique_ptr<DeepseekV3Model>> Load(const std::string& model_dir,
                                                               Backend& backend);
  // With tensor parallelism: loads rank comm.rank()'s shard of comm.world_size(); Forward then
  // runs the collectives through `comm` (which must outlive the model). Every rank must call
  // Forward with the same batch.
  // `options`: how the weights are read and where progress goes (ModelWeights::Load).
  // With `dp_attention` (--dp-attention) the ranks split only the routed experts (Shard's
  // experts_only): each rank then runs Forward over its own batch (its own sequences, its own
  // cache; empty batches included, every rank calls Forward each step) and gets its own logits,
  // and the MoE layers exchange tokens with the experts' owners (expert_parallel_moe.h). On a GPU
  // `comm` must take device tensors (NCCL), and Forward runs eagerly (the compacted dispatch
  // layout's MoE layers synchronize with the host; ForwardBatch::max_rank_tokens picks the
  // layout).
  static absl::StatusOr<std::unique_ptr<DeepseekV3Model>> Load(
      const std::string& model_dir, Backend& backend, Communicator& comm,
      const WeightLoadOptions& options = {}, bool dp_attention = false);

  // A model of `config`'s shapes with random weights made by the backend (FP8 where the config
  // says so), for benchmarks at full size without a checkpoint. With `comm`, rank comm.rank()'s
  // shard of those shapes (the values differ from rank to rank: timing only).
  static absl::StatusOr<std::unique_ptr<DeepseekV3Model>> Random(
      const ModelConfig& config, Backend& backend, uint64_t seed,
      Communicator& comm = SingleRankCommunicator::Instance(), bool dp_attention = false);

  ~DeepseekV3Model();
  DeepseekV3Model(const DeepseekV3Model&) = delete;
  DeepseekV3Model& operator=(const DeepseekV3Model&) = delete;

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }
  // Loaded with dp_attention: every rank runs its own batch.
  bool dp_attention() const;
  // Whether Forward on this rank fills logits and hidden states: rank 0 under tensor
  // parallelism, every rank under data-parallel attention or alone.
  bool returns_outputs() const;

  // Runs the batch. Writes the latents of every new token into `cache` and the float32 logits of
  // batch.logits_rows into `logits` ([logits_rows.size(), vocab_size], resized here; with tensor
  // parallelism on rank 0 only, the other ranks get it empty: returns_outputs()).
  // The batch must be valid (token ids in range, block tables covering every position): the
  // engine validates requests before they get here.
  // Not reentrant: one Forward at a time per model.
  // Fails only when a collective fails (a tensor-parallel peer died or timed out); the logits
  // are then undefined.
  // With `hidden`, also the float32 final hidden states (after model.norm) of batch.hidden_rows
  // ([hidden_rows.size(), hidden_size], resized here; rank 0 only).
  absl::Status Forward(const ForwardBatch& batch, KvCache& cache, std::vector<float>& logits,
                       MlaMode mla_mode = MlaMode::kAuto, std::vector<float>* hidden = nullptr);

  // Forward in two halves, for the decode graph runner (step_graphs.h), which captures the
  // device half once per padded step shape and replays it.
  // Host half: the step's layout (kept by the caller until the step's last op), handed to the
  // backend's BeginStep. `padded_context` > 0: a graph step whose decode attention pads every
  // sequence to that context.
  AttentionBatch BeginStep(const ForwardBatch& batch, const KvCache& cache,
                           MlaMode mla_mode = MlaMode::kAuto, int64_t padded_context = 0);
  // Device half of the step `ab` = BeginStep(batch, ...) planned: every layer, then the float32
  // logits of batch.logits_rows into `logits` ([rows, vocab_size] on the device; ranks where
  // returns_outputs(), the others pass it empty) and, unless `hidden` is empty, the final hidden states of
  // batch.hidden_rows into it ([rows, hidden_size] F32). Only ops on the backend's queue and
  // collectives when logits_rows and hidden_rows are every row in order (then it can be captured
  // as a graph); fails as Forward does.
  absl::Status RunStep(const ForwardBatch& batch, const AttentionBatch& ab, KvCache& cache,
                       const TensorView& logits, const TensorView& hidden);

  // True when the checkpoint has the MTP module (and this model loaded it).
  bool has_mtp() const { return weights_->mtp.has_value(); }

  // Runs the MTP module (SPEC section 3) over `batch`, whose row r stands for position
  // positions[r] = i of its sequence: token_ids[r] is t_{i+1} and hidden[r] ([T, H] float32,
  // host) is h_i, the main model's final hidden state at i (or, to chain drafts, the MTP module's
  // own output state at i - 1). The MTP layer's latents of those positions go into
  // cache.layer(num_hidden_layers) through the batch's block tables (the cache must have the MTP
  // layer; its entries for positions [0, context_begin) must be there). Writes the float32 logits
  // of t_{i+2} for batch.logits_rows into `logits` ([rows, V]) and, with `hidden_out`, the MTP
  // output state of those rows (after shared_head.norm: what the next chained draft takes as h)
  // into it ([rows, H]). Under tensor parallelism every rank calls it with the same batch, and
  // `hidden` is rank 0's business (the others pass it empty; the logits and output states come
  // back on rank 0 only, as Forward's); under data-parallel attention each rank runs its own
  // batch (ForwardMtpDataParallel). FailedPrecondition without the MTP module or the cache
  // layer; otherwise fails only as Forward does.
  absl::Status ForwardMtp(const ForwardBatch& batch, absl::Span<const float> hidden,
                          KvCache& cache, std::vector<float>& logits,
                          std::vector<float>* hidden_out = nullptr);

 private:
  DeepseekV3Model(ModelConfig config, Backend& backend, Communicator& comm);

  // Sums a partial result over the tensor-parallel ranks (nothing to do on one rank).
  absl::Status AllReduce(const TensorView& t);

  // One decoder layer over the residual stream x [T, H] (updated in place). branch [T, H] F32:
  // on entry, when `pending`, the layer before's output still to be added to x (added here in
  // one op with this layer's first norm); on return, this layer's own output, still to be added
  // (by the next layer, or by the caller after the last). `max_rank_tokens`: the step's
  // ForwardBatch::max_rank_tokens (the MoE layers' dispatch layout under dp_attention).
  absl::Status Layer(const LayerWeights& layer, const TensorView& x, const TensorView& branch,
                     bool pending, const AttentionBatch& batch, const TensorView& cache,
                     MlaMode mode, int64_t max_rank_tokens);
  // normed [R, H] (final-normed rows) -> float32 logits [R, V] on the device, rank 0 only,
  // through the vocabulary-parallel head.
  absl::Status Head(const TensorView& normed, const TensorView& logits);
  // Rows `rows` of x [T, H] normalized with `norm` into out [R, H] (no gather when `rows` is
  // every row in order).
  void NormedRows(const TensorView& x, std::span<const int32_t> rows, const TensorView& norm,
                  const TensorView& out);
  // MLA over x [T, H] (the normed input) and qkv_lat = x [q_a; kv_a]^T (Layer computes it with
  // the norm); out [T, H] F32.
  void Attention(const LayerWeights& layer, const TensorView& x, const TensorView& qkv_lat,
                 const AttentionBatch& batch, const TensorView& cache, MlaMode mode,
                 const TensorView& out);
  // out [T, H] = the MLP of x [T, H] (out += with add_to_out).
  void Mlp(const MlpWeights& w, const TensorView& x, const TensorView& out,
           bool add_to_out = false);
  // Fails only when the expert-parallel exchange fails (dp_attention).
  absl::Status Moe(const MoeWeights& w, const TensorView& x, int64_t max_rank_tokens,
                   const TensorView& out);

  ModelConfig config_;
  Backend& backend_;
  Communicator& comm_;
  std::unique_ptr<Checkpoint> checkpoint_;  // the opened shards (weights are copied out at load)
  std::unique_ptr<ModelWeights> weights_;
  RopeTable rope_;
  Tensor logits_scratch_;  // Forward's device logits, grown as needed (not reentrant)
};

// Builds the layout of a batch: tokens, positions, cache slots, per-sequence block tables.
AttentionBatch MakeAttentionBatch(const ForwardBatch& batch, int32_t block_size);

}  // namespace dsv3
