// The op interface the model is written against. One implementation per device (cpu/, cuda/);
// the model never branches on the device. Every op takes plain views and small params structs
// (pointers, sizes, strides), so the host can fill them once per step and reuse them per layer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "engine/backend/step_graph_capture.h"
#include "absl/status/statusor.h"
#include "engine/backend/tensor.h"

namespace dsv3 {

class TensorSource;
struct Slice2D;

// Device memory as a GPU backend sees it, in bytes (KV sizing by --gpu-memory-utilization,
// engine/kv_sizing.h).
struct DeviceMemory {
  int64_t total = 0;          // the device's memory
  int64_t free = 0;           // free now, as the driver reports it (all processes)
  int64_t free_at_start = 0;  // free when the backend was created (its CUDA context made)
  // Highest memory reserved by the backend's allocator pool since the last ResetPeakMemory
  // (freed tensors stay reserved for reuse, so this is the footprint a step needs).
  int64_t pool_peak = 0;
  int64_t pool_reserved = 0;  // reserved by the pool now
  // Held by the model's weights: every tensor LoadLinear, LoadDense and MakeLinear made, as
  // stored (FP8 padded to the GEMMs' tiles, with its block scales), plus what the backend derives
  // from a weight and keeps as long as the weight lives (BF16 copies of FP8 weights dequantized
  // once, the grouped experts' pointer tables). Bytes of the tensors, before the pool rounds
  // each up to its alignment.
  int64_t weight_bytes = 0;
};

// A linear layer's weight as the backend keeps it: y[M,N] = x[M,K] W[N,K]^T.
// CPU: F32 (dequantized at load). CUDA: F8_E4M3 with block scales, or BF16.
struct LinearWeight {
  TensorView weight;     // [N, K]
  TensorView scale_inv;  // [ceil(N/128), ceil(K/128)] F32 for FP8 weights, else empty
  // A GPU's FP8 codes laid out k-block-major (kernels/weight_layout.cuh) instead of [N, K] by
  // Backend::PrepareRoutedExperts; `weight` keeps its shape and row stride (the padded K). Only
  // the backend's MoE ops read such a weight.
  bool k_block_major = false;
  int64_t n() const { return weight.dim(0); }
  int64_t k() const { return weight.dim(1); }
};

// Rotary embedding parameters shared by every layer (YaRN already folded into inv_freq).
struct RopeParams {
  const float* inv_freq = nullptr;  // [rope_dim / 2], host memory
  int64_t rope_dim = 0;
  float attention_factor = 1.0f;  // multiplies cos and sin (YaRN mscale ratio)
  bool interleaved = true;        // pairs (2i, 2i+1); false: pairs (i, i + rope_dim/2)
};

enum class MlaMode {
  kAuto,      // naive for sequences with several new tokens (prefill), absorbed for one (decode)
  kNaive,     // up-project the cached latents to per-head K and V, then attend
  kAbsorbed,  // fold W_UK into the query and W_UV into the output; attend over the latents
};

// The per-step layout of the batch: which rows belong to which sequence, their tokens and
// positions, and where each position lives in the paged latent cache.
struct AttentionBatch {
  struct Sequence {
    int32_t token_begin;    // first row in the flattened batch
    int32_t num_tokens;     // new tokens
    int32_t context_begin;  // position of the first new token
    const int32_t* block_table;  // physical block per logical block, covers context_end
    int32_t num_blocks;
  };
  std::vector<Sequence> sequences;
  std::vector<int32_t> positions;     // [T]
  std::vector<int64_t> slot_mapping;  // [T]: block * block_size + offset of each new token
  int32_t block_size = 0;
  std::vector<int32_t> token_ids;  // [T]: the step's tokens (the embedding's input)
  MlaMode mla_mode = MlaMode::kAuto;  // every MlaAttention of the step uses this mode
  // A graph step's attention context (engine/model/step_graphs.h): decode attention pads every
  // sequence to it, and a GPU backend keeps the plan of every step of the same shape at the
  // same addresses. 0: an ordinary step.
  int64_t padded_context = 0;
  // The MLA latent cache row's two parts (kv_lora_rank and the rope dims): a GPU backend picks
  // its decode attention path in BeginStep by them. 0 when the caller does not say.
  int64_t kv_lora_rank = 0, rope_dim = 0;
};

struct MlaParams {
  int64_t num_heads = 0;  // heads on this rank
  int64_t nope_dim = 0;
  int64_t rope_dim = 0;
  int64_t v_dim = 0;
  int64_t kv_lora_rank = 0;
  float softmax_scale = 1.0f;
  MlaMode mode = MlaMode::kAuto;
};

// A step's MLA inputs (Backend::PrepareMlaInputs): the latent rows of kv_a's output [T, kv_lora +
// rope], its columns c [T, kv_lora] and k_pe [T, 1, rope], and q's rope part [T, heads, rope].
struct MlaInputs {
  TensorView latent, c, k_pe, q_pe;
};

// An attention's query through q_b and its MLA inputs (Backend::MlaQueryAndInputs): q_lat [T,
// q_lora] (normed in place), q_a_norm [q_lora], q_b [heads * (nope + rope), q_lora], q [T,
// heads * (nope + rope)], `inputs` as PrepareMlaInputs takes them (q_pe: q's rope columns),
// kv_a_norm [kv_lora].
struct MlaQueryArgs {
  TensorView q_lat, q_a_norm;
  const LinearWeight* q_b = nullptr;
  TensorView q;
  MlaInputs inputs;
  TensorView kv_a_norm;
  float eps = 1e-6f;
};

// Routing parameters of a MoE layer (noaux_tc: sigmoid scores, correction bias, group limit).
struct MoeRouteParams {
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int64_t num_groups = 1;
  int64_t topk_groups = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
};

struct ExpertWeights {
  LinearWeight gate;  // [I, H]
  LinearWeight up;    // [I, H]
  LinearWeight down;  // [H, I]
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual Allocator* allocator() = 0;
  virtual std::string name() const = 0;
  // Element type of activations between ops (F32 on the CPU; BF16 on GPUs) and of the latent
  // KV cache. Logits are always F32.
  virtual DType activation_dtype() const { return DType::kF32; }
  virtual DType kv_cache_dtype() const { return DType::kF32; }
  // The device queue this backend's ops run on, for collectives that must be ordered with them
  // (MakeDeviceCommunicator hands it to NCCL): a CUDA backend's cudaStream_t; null on the host,
  // whose collectives go through the host communicator. Wrappers forward their inner backend's,
  // so a wrapped GPU backend still gets device collectives.
  virtual void* device_stream() { return nullptr; }

  // ---- Weights -------------------------------------------------------------------------------
  // Loads "<prefix>.weight" ([n, k], FP8 with scale_inv or a float type) in the backend's format.
  // `source` is read only during the call: its memory (the loader's staging ring) is reused
  // when the call returns, so any copy out of it has finished by then.
  virtual absl::StatusOr<LinearWeight> LoadLinear(const TensorSource& source,
                                                  const std::string& prefix, int64_t n, int64_t k,
                                                  const Slice2D& slice,
                                                  std::vector<Tensor>& storage) = 0;
  // Loads a float tensor (norm weights, router, embedding) as F32 (CPU) or the device's format.
  // `source` as for LoadLinear.
  virtual absl::StatusOr<TensorView> LoadDense(const TensorSource& source, const std::string& name,
                                               std::span<const int64_t> shape,
                                               std::vector<Tensor>& storage) = 0;
  // Host memory the weight loader reads the checkpoint into before LoadLinear/LoadDense copy it
  // out: pinned on GPUs (copies to the device are DMA from it), plain on the CPU.
  virtual Allocator* staging_allocator() { return HostAllocator(); }
  // Lays a MoE layer's loaded routed experts out for this backend's MoE kernels, in place, once:
  // MoeExperts and MoeExpertsWithShared are their only readers. The default keeps them as
  // loaded (LinearWeight::k_block_major says what a backend did).
  virtual absl::Status PrepareRoutedExperts(std::span<ExpertWeights> /*experts*/) {
    return absl::OkStatus();
  }
  // Makes a linear weight from host data: `weight` [N, K] F8_E4M3 with `scale_inv`
  // [ceil(N/128), ceil(K/128)] F32, or an F32/BF16 weight with `scale_inv` empty. The data is
  // copied; `storage` owns the result (as for LoadLinear).
  virtual absl::StatusOr<LinearWeight> MakeLinear(const TensorView& weight,
                                                  const TensorView& scale_inv,
                                                  std::vector<Tensor>& storage) = 0;
  // Copies host data to a new device tensor (F32 in, the activation type out; I32 stays I32) or
  // host to host.
  virtual Tensor Upload(const TensorView& host) = 0;
  // Copies a device tensor into host memory (F32).
  virtual void Download(const TensorView& device_tensor, float* host) = 0;
  // Byte copies between host memory and a contiguous tensor of this backend, any dtype, no
  // conversion (routing ids, row counts, logits on their way to a collective). CopyToHost waits
  // for the work queued before it, so `host` holds the bytes on return (a device backend
  // synchronizes here). CopyFromHost is ordered with the ops around it, and `host` may be
  // reused once it returns.
  virtual void CopyToHost(const TensorView& src, void* host) = 0;
  virtual void CopyFromHost(const void* host, const TensorView& dst) = 0;

  // ---- Step hooks (the CPU needs none) --------------------------------------------------------
  // Called once per step before its first op, with the step's layout (which stays alive and
  // unchanged until the step's last op): a GPU backend builds its step plan here (uploads the
  // host arrays once, chooses the attention path and its parameters). WriteKvCache and
  // MlaAttention take the batch of the last BeginStep; Embedding and Rope read the plan's copies
  // when their ids or positions equal the step's.
  virtual void BeginStep(const AttentionBatch& batch) {}
  // Called before layer `layer`'s first op, and with layer = -1 before the final norm and head
  // (per-layer timing in benchmarks).
  virtual void BeginLayer(int64_t layer) {}
  // Waits for all queued device work.
  virtual void Synchronize() {}

  // ---- Device memory (GPU backends; the CPU backend has none to report) ----------------------
  // Nullopt on a host backend.
  virtual std::optional<DeviceMemory> MemoryInfo() { return std::nullopt; }
  // Starts DeviceMemory::pool_peak again from what the pool holds now.
  virtual void ResetPeakMemory() {}
  // Synchronizes and returns the pool's unused reservations to the driver, so that a freed
  // dummy step (the KV sizing profile) leaves nothing behind.
  virtual void ReleaseCachedMemory() {}
  // Device memory that captured step graphs may hold (their temporaries' arenas, the graph
  // steps' plan workspace and the instantiated graphs); a step that would need more runs
  // eagerly. INT64_MAX: no bound.
  virtual void SetGraphMemoryLimit(int64_t bytes) {}
  // Whole-step graph capture (engine/model/step_graphs.h drives it); null on backends without
  // graphs, and while a wrapper needs every op to run (op timing).
  virtual StepGraphCapture* step_graphs() { return nullptr; }

  // ---- Ops (all outputs are written completely; inputs are never modified unless stated) -----
  // A vocabulary shard's lookup: table holds rows [first_row, first_row + V_shard) of the
  // embedding; out[t, :] = table[ids[t] - first_row, :] for ids inside the shard, zeros for ids
  // outside (another rank's). table [V_shard, H], out [T, H].
  virtual void Embedding(const TensorView& table, std::span<const int32_t> ids, int64_t first_row,
                         const TensorView& out) = 0;
  // out = x / sqrt(mean(x^2) + eps) * weight, row by row. x, out [M, D] (row strides allowed).
  virtual void RmsNorm(const TensorView& x, const TensorView& weight, float eps,
                       const TensorView& out) = 0;
  // y[M, N] = x[M, K] W^T.
  virtual void Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) = 0;
  // out = a + b, elementwise, [M, D].
  virtual void Add(const TensorView& a, const TensorView& b, const TensorView& out) = 0;
  // y[M, N] += x[M, K] W^T (the shared expert's output onto the routed experts' sum). A backend
  // may add in the GEMM's epilogue (cuBLASLt's beta = 1: one pass over y fewer) where that gives
  // the same results as the parts: y F32, one rounding either way.
  virtual void LinearAdd(const TensorView& x, const LinearWeight& w, const TensorView& y) {
    Tensor product(allocator(), y.dtype, {y.dim(0), y.dim(1)});  // [M, N]
    Linear(x, w, product);
    Add(y, product, y);
  }
  // The residual add and the norm after it: x = x + branch (rounded to x's type), then out =
  // RmsNorm(x) * weight. x, branch, out [M, D]. A backend may do both in one pass (one kernel on
  // GPUs) with the same results as the two ops.
  virtual void AddRmsNorm(const TensorView& x, const TensorView& branch, const TensorView& weight,
                          float eps, const TensorView& out) {
    Add(x, branch, x);
    RmsNorm(x, weight, eps, out);
  }
  // A norm and the linear that reads it, after the residual add when `branch` is given: x = x +
  // *branch (as AddRmsNorm), normed = RmsNorm(x) * norm_weight (normed may be x), then y =
  // normed W^T. A backend may quantize the linear's input inside the norm (GPU FP8: one kernel
  // fewer) with the same results as the parts.
  virtual void RmsNormLinear(const TensorView& x, const TensorView* branch,
                             const TensorView& norm_weight, float eps, const TensorView& normed,
                             const LinearWeight& w, const TensorView& y) {
    if (branch != nullptr) {
      AddRmsNorm(x, *branch, norm_weight, eps, normed);
    } else {
      RmsNorm(x, norm_weight, eps, normed);
    }
    Linear(normed, w, y);
  }
  // MLA's inputs of a step, before attention, in place: c = RmsNorm(c) * norm_weight; k_pe and
  // q_pe rotated at positions; then latent's rows written to the cache (WriteKvCache). latent
  // [T, kv_lora + rope] has the columns c [T, kv_lora] and k_pe (a [T, 1, rope] view); q_pe
  // [T, heads, rope]. A backend may do it all in one pass (one kernel on GPUs) with the same
  // results as the parts.
  virtual void PrepareMlaInputs(const MlaInputs& in, const TensorView& norm_weight, float eps,
                                std::span<const int32_t> positions, const RopeParams& rope,
                                const AttentionBatch& batch, const TensorView& cache) {
    RmsNorm(in.c, norm_weight, eps, in.c);
    Rope(in.k_pe, positions, rope);
    Rope(in.q_pe, positions, rope);
    WriteKvCache(in.latent, batch, cache);
  }
  // q = RmsNormLinear(q_lat, q_a_norm, q_b) (normed in place), then PrepareMlaInputs. A backend
  // may run the two as fewer kernels (the GPU at decode sizes: the latent's part beside q_a's
  // norm, q_pe rotated as q_b's GEMM stores it) with the same results as the parts.
  virtual void MlaQueryAndInputs(const MlaQueryArgs& a, std::span<const int32_t> positions,
                                 const RopeParams& rope, const AttentionBatch& batch,
                                 const TensorView& cache) {
    RmsNormLinear(a.q_lat, nullptr, a.q_a_norm, a.eps, a.q_lat, *a.q_b, a.q);
    PrepareMlaInputs(a.inputs, a.kv_a_norm, a.eps, positions, rope, batch, cache);
  }
  // Rotates x [T, heads, rope_dim] (any strides) in place at positions[t].
  virtual void Rope(const TensorView& x, std::span<const int32_t> positions,
                    const RopeParams& rope) = 0;
  // out[M, I] = silu(gate[M, I]) * up[M, I].
  virtual void SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) = 0;
  // dst = src for 2-D views of the same shape (row strides allowed), converting between F32 and
  // the activation type.
  virtual void Copy(const TensorView& src, const TensorView& dst) = 0;
  // Gathers rows: out[r, :] = x[rows[r], :].
  virtual void GatherRows(const TensorView& x, std::span<const int32_t> rows,
                          const TensorView& out) = 0;
  // The inverse of GatherRows with sums: out[i, :] = the sum of x[r, :] over every r with
  // index[r] == i, added in ascending r in F32 starting from zero (rows no r names become
  // zeros), then rounded once to out's type. x [R, D], index [R] in [0, N), out [N, D]; F32 or
  // the activation type. The order is fixed, so the result is deterministic (no atomics).
  virtual void ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                              const TensorView& out) = 0;
  // Pads a block of rows to a fixed count: out[r, :] = x[r, :] bit for bit for r < T, and every
  // element of rows [T, C) = `fill` in out's type (F32, BF16 or I32; fill must be exact in it).
  // x [T, D], out [C, D], C >= T, same dtype. Sizes only, no index data: the fixed-capacity
  // expert-parallel dispatch pads each rank's tokens to the step's capacity with it.
  virtual void PadRows(const TensorView& x, float fill, const TensorView& out) = 0;
  // Sums row blocks: out[i, :] = the sum over b in [0, blocks) of x[b * R + i, :], added in
  // ascending b in F32 starting from zero, then rounded once to out's type. x [blocks * R, D]
  // (R = x.dim(0) / blocks), out [N, D], N <= R; F32 or the activation type. It is ScatterSumRows
  // with the index [0, R) repeated `blocks` times, fixed by the sizes (the fixed-capacity
  // expert-parallel combine: nothing to upload, so a CUDA graph can hold it).
  virtual void SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) = 0;

  // Writes the new tokens' latents into the paged cache: cache[slot_mapping[t], :] = latent[t, :].
  // latent [T, kv_dim], cache [num_blocks, block_size, kv_dim].
  virtual void WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                            const TensorView& cache) = 0;
  // Multi-head latent attention over the paged cache (which already holds the new tokens).
  // q [T, heads, nope + rope] (q_pe part already rotated), kv_b = kv_b_proj [heads*(nope+v),
  // kv_lora], out [T, heads * v].
  virtual void MlaAttention(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                            const AttentionBatch& batch, const MlaParams& params,
                            const TensorView& out) = 0;
  // MlaAttention into attn, then Linear(attn, o_proj, out), where the backend can run them
  // together (the GPU's decode steps: W_UV's kernel also quantizes attn for o_proj's GEMM). The
  // same outputs as the parts (attn included). Not forwarded by ForwardingBackend.
  virtual void MlaAttentionLinear(const TensorView& q, const TensorView& cache,
                                  const LinearWeight& kv_b, const AttentionBatch& batch,
                                  const MlaParams& params, const TensorView& attn,
                                  const LinearWeight& o_proj, const TensorView& out) {
    MlaAttention(q, cache, kv_b, batch, params, attn);
    Linear(attn, o_proj, out);
  }

  // noaux_tc routing: scores = sigmoid(x W_g^T); top-k experts per token.
  // x [T, H], router [E, H], bias [E]; topk_ids [T, k] I32, topk_weights [T, k] F32.
  virtual void MoeRoute(const TensorView& x, const TensorView& router, const TensorView& bias,
                        const MoeRouteParams& params, const TensorView& topk_ids,
                        const TensorView& topk_weights) = 0;
  // out[t] = sum_j w[t,j] * Expert_{ids[t,j]}(x[t]) over the experts this rank holds
  // (global ids [expert_begin, expert_begin + experts.size())); any other id, -1 included, is
  // skipped (a row with none of this rank's experts gives zeros). x, out [T, H].
  virtual void MoeExperts(const TensorView& x, const TensorView& topk_ids,
                          const TensorView& topk_weights, std::span<const ExpertWeights> experts,
                          int64_t expert_begin, const TensorView& out) = 0;
  // MoeExperts plus the shared expert `shared` (every token's, weight 1) in the same pass: out[t]
  // = the routed sum + Shared(x[t]), where the backend can run the shared expert as one more
  // expert (the GPU's grouped experts: no GEMMs, quantization or add of its own). Returns false,
  // having done nothing, where it cannot; the caller then runs the shared expert apart.
  virtual bool MoeExpertsWithShared(const TensorView& /*x*/, const TensorView& /*topk_ids*/,
                                    const TensorView& /*topk_weights*/,
                                    std::span<const ExpertWeights> /*experts*/,
                                    int64_t /*expert_begin*/, const ExpertWeights& /*shared*/,
                                    const TensorView& /*out*/) {
    return false;
  }
};

}  // namespace dsv3
