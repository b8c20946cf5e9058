// The CUDA backend (H100/H200, sm_90a): BF16 activations and latent cache, FP8 weights with
// their checkpoint block scales (BF16 where the checkpoint has no FP8), FP8 linear layers through
// cuBLASLt block scaling (SPEC section 4), and the kernels of kernels/. All work goes to one
// stream; memory comes from the stream-ordered pool, so a tensor freed on the host may be reused
// by the next op without a synchronization.
//
// BeginStep builds the step plan once per step (StepPlan: the step's host arrays on the device,
// and per MLA form the attention path and its parameters); every layer runs from it. Host arrays
// that ops receive outside the plan (other ids, positions, rows) are uploaded per call. Whole
// steps become CUDA graphs through step_graphs() (cuda_step_graphs.cc), driven by
// engine/model/step_graphs.h.
// Ops check their CUDA and cuBLASLt calls and abort on failure (a device fault or a bug: the
// model validates everything user-controlled before it gets here).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "engine/backend/backend.h"
#include "engine/backend/cuda/cublaslt_gemm.h"
#include "engine/backend/cuda/stream_allocator.h"
#include "engine/backend/timing_hooks.h"
#include "kernels/elem_type.h"

namespace dsv3::kernels {
struct FlashSplitPartials;
struct GroupedWeight;
struct MlaInputsParams;
struct RmsNormParams;
struct RopeEpilogue;
}  // namespace dsv3::kernels

namespace dsv3 {

// The kernels' element type of a tensor dtype (F32 for types the kernels take as F32).
inline kernels::ElemType ElemTypeOf(DType t) {
  switch (t) {
    case DType::kBF16: return kernels::ElemType::kBF16;
    case DType::kF8E4M3: return kernels::ElemType::kF8E4M3;
    case DType::kI32: return kernels::ElemType::kI32;
    default: return kernels::ElemType::kF32;
  }
}

// v rounded up to a multiple of m (m > 0): padded rows and K of weights and activations.
inline int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

class CudaBackend final : public Backend {
 public:
  struct Options {
    int device = 0;
    bool ue8m0_activation_scales = false;  // V3.1's scale_fmt "ue8m0"
    bool cuda_graphs = true;  // whole decode steps as CUDA graphs (step_graphs())
    // Kernels of steps of at most SetGroupedMoeMaxTokens tokens (decode, verify) launched with
    // programmatic dependent launch (kernels/launch.cuh); larger steps launch the plain way.
    bool programmatic_launch = true;
    // The shared expert as one more expert of the grouped FP8 MoE (MoeExpertsWithShared) in
    // steps of at most kFuseSharedMaxTokens tokens.
    bool fuse_shared_expert = true;
    // AddRmsNorm, RmsNormLinear and PrepareMlaInputs as one kernel each; off: the Backend
    // defaults (the parts).
    bool fuse_norms = true;
    // Grouped small-M launches (decode experts) of more than 8 rows per expert run each
    // expert's chunks of 8 rows as blocks of their own (kernels::GroupedFp8GemmParams::
    // chunks); off: one block through all of an expert's chunks (to measure what it gives).
    bool grouped_chunks = true;
    // Grouped launches of at most kAlignQuantizeMaxRows routed rows align and quantize them in
    // one kernel (kernels::MoeAlignQuantize); off: MoeAlign, then QuantizeActivations (to
    // measure what the fusion gives).
    bool fuse_moe_align_quantize = true;
    // Tiled (prefill) grouped experts: gate|up's launch writes down's quantized input itself
    // (kernels::Fp8GroupedGemmParams::h_q); off: gate|up in BF16, then the SiLU-gate's
    // quantization kernel (to measure what it gives).
    bool swiglu_in_grouped_gemm = true;
    // MlaAttentionLinear in steps of a few tokens (the small-M o_proj) whose W_UV runs on its
    // weight-streaming kernel: that kernel also quantizes its output for o_proj (a head's two
    // blocks as a cluster sharing the amax), so no quantization kernel runs between them; off:
    // MlaAttention, then Linear (to measure what it gives).
    bool quantize_in_w_uv = true;
    // In one-token decode steps whose flash decode launch cuts the keys into parts, W_UV's
    // kernel merges the pieces itself (kernels::MlaAbsorbParams::merge) instead of a combine
    // kernel between them; off: the combine kernel (to measure what it gives).
    bool merge_in_w_uv = true;
    // MlaQueryAndInputs in steps of at most kFusedNormMaxRows tokens (with fuse_norms) as two
    // kernels instead of three: the latent's norm, RoPE and cache write beside q_a's norm and
    // quantization, q_pe's RoPE in q_b's GEMM as it stores q; off: RmsNormLinear, then
    // PrepareMlaInputs (to measure what the fusion gives).
    bool fuse_mla_query = true;
    // The flash decode launch's parts (kernels/flash_mla_cut.h): 0 takes FlashMlaDecodeParts's
    // rule; n > 0 forces min(n, kFlashDecodeMaxParts) (to measure the rule in the model, where
    // W_UV's kernel merges the pieces of one-token steps).
    int flash_decode_parts = 0;
  };
  // Beyond this many tokens the shared expert runs apart: with tens of rows it would be the
  // small-M grouped kernel's longest item, and prefill's tiled GEMMs gain nothing from it
  // (docs/journal/2026-12-02-stream-wgmma-and-shared-experts.md).
  static constexpr int64_t kFuseSharedMaxTokens = 8;
  // Rows up to which an FP8 linear runs on kernels::DenseFp8Gemm instead of cuBLASLt: cuBLASLt's
  // block-scaled FP8 GEMM costs a ~30 us floor per call whatever the size (H200), while at a few
  // rows the linear is a stream of its weight, which the small-M kernel reads at memory speed.
  static constexpr int64_t kSmallFp8Rows = 16;
  // AddRmsNorm, RmsNormLinear and PrepareMlaInputs run as one kernel up to this many rows
  // (decode, verify): with more rows the parts' grids of small blocks were faster than a
  // 1024-thread block per row doing all. AddRmsNorm and RmsNormLinear fuse again from
  // kernels::kNormManyRows rows (prefill), where the norms' blocks are 256 threads
  // (FusesNorms).
  static constexpr int64_t kFusedNormMaxRows = 16;
  // Grouped MoE launches of up to this many (padded) routed rows align and quantize them in one
  // kernel (kernels::MoeAlignQuantize, with fuse_moe_align_quantize): one V3 decode token's 8
  // experts and shared expert (12 rows padded). Each of its blocks aligns every entry itself,
  // which gained ~1 us per MoE layer at one token and lost ~1 us at 8 (72 rows) on an H100
  // (docs/journal/2026-12-06-session-38.md).
  static constexpr int64_t kAlignQuantizeMaxRows = 16;
  const Options& options() const { return options_; }
  // Fails when there is no usable CUDA device.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const Options& options);
  ~CudaBackend() override;

  // Number of CUDA devices (0 without a driver or a GPU), for tests that skip.
  static int DeviceCount();

  Device device() const override { return Device::kCuda; }
  // The pool, or the arena of a graph step's plan or of a graph capture while one is being made.
  Allocator* allocator() override {
    return active_arena_ != nullptr ? static_cast<Allocator*>(active_arena_) : allocator_.get();
  }
  std::string name() const override { return "cuda"; }
  DType activation_dtype() const override { return DType::kBF16; }
  DType kv_cache_dtype() const override { return DType::kBF16; }
  void* device_stream() override { return stream_; }

  absl::StatusOr<LinearWeight> LoadLinear(const TensorSource& ckpt, const std::string& prefix,
                                          int64_t n, int64_t k, const Slice2D& slice,
                                          std::vector<Tensor>& storage) override;
  // 1-D tensors (norm weights, biases) become F32, 2-D ones (embedding, router) BF16.
  absl::StatusOr<TensorView> LoadDense(const TensorSource& ckpt, const std::string& name,
                                       std::span<const int64_t> shape,
                                       std::vector<Tensor>& storage) override;
  absl::StatusOr<LinearWeight> MakeLinear(const TensorView& weight, const TensorView& scale_inv,
                                          std::vector<Tensor>& storage) override;
  // Pinned (pinned_host_allocator.h).
  Allocator* staging_allocator() override;
  // FP8 experts that the grouped kernels take (at most kMaxGroupedExperts of one shape) become
  // k-block-major.
  absl::Status PrepareRoutedExperts(std::span<ExpertWeights> experts) override;
  // F32 host data becomes BF16, I32 stays I32.
  Tensor Upload(const TensorView& host) override;
  void Download(const TensorView& device_tensor, float* host) override;
  // Both count as host work (NoteHostWork): CopyToHost synchronizes the stream, CopyFromHost
  // copies from pageable memory.
  void CopyToHost(const TensorView& src, void* host) override;
  void CopyFromHost(const void* host, const TensorView& dst) override;

  void BeginStep(const AttentionBatch& batch) override;
  void Synchronize() override;
  std::optional<DeviceMemory> MemoryInfo() override;
  void ResetPeakMemory() override;
  void ReleaseCachedMemory() override;
  void SetGraphMemoryLimit(int64_t bytes) override { graph_memory_limit_ = bytes; }
  // Null while graphs are off (Options::cuda_graphs, SetCudaGraphs).
  StepGraphCapture* step_graphs() override;

  void Embedding(const TensorView& table, std::span<const int32_t> ids, int64_t first_row,
                 const TensorView& out) override;
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps,
               const TensorView& out) override;
  void Linear(const TensorView& x, const LinearWeight& w, const TensorView& y) override;
  void LinearAdd(const TensorView& x, const LinearWeight& w, const TensorView& y) override;
  void Add(const TensorView& a, const TensorView& b, const TensorView& out) override;
  // One kernel each where FusesNorms (kernels::RmsNorm with its add; kernels::RmsNormQuantize
  // for an FP8 linear), else the parts; the same bits either way.
  void AddRmsNorm(const TensorView& x, const TensorView& branch, const TensorView& weight,
                  float eps, const TensorView& out) override;
  void RmsNormLinear(const TensorView& x, const TensorView* branch, const TensorView& norm_weight,
                     float eps, const TensorView& normed, const LinearWeight& w,
                     const TensorView& y) override;
  // One kernel up to kFusedNormMaxRows tokens (kernels::MlaInputs), the parts beyond.
  void PrepareMlaInputs(const MlaInputs& in, const TensorView& norm_weight, float eps,
                        std::span<const int32_t> positions, const RopeParams& rope,
                        const AttentionBatch& batch, const TensorView& cache) override;
  void Rope(const TensorView& x, std::span<const int32_t> positions,
            const RopeParams& rope) override;
  // Two kernels up to kFusedNormMaxRows tokens with Options::fuse_mla_query
  // (kernels::RmsNormQuantizeMlaLatents, then kernels::DenseFp8Gemm with its RoPE epilogue), the
  // parts beyond.
  void MlaQueryAndInputs(const MlaQueryArgs& a, std::span<const int32_t> positions,
                         const RopeParams& rope, const AttentionBatch& batch,
                         const TensorView& cache) override;
  void SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) override;
  void Copy(const TensorView& src, const TensorView& dst) override;
  void GatherRows(const TensorView& x, std::span<const int32_t> rows,
                  const TensorView& out) override;
  // Uploads the index as per-output-row source lists (one host pass; NoteHostWork).
  void ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                      const TensorView& out) override;
  // Both take sizes only (no upload), so a captured step can hold them.
  void PadRows(const TensorView& x, float fill, const TensorView& out) override;
  void SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) override;
  void WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                    const TensorView& cache) override;
  void MlaAttention(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                    const AttentionBatch& batch, const MlaParams& params,
                    const TensorView& out) override;
  void MlaAttentionLinear(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                          const AttentionBatch& batch, const MlaParams& params,
                          const TensorView& attn, const LinearWeight& o_proj,
                          const TensorView& out) override;
  void MoeRoute(const TensorView& x, const TensorView& router, const TensorView& bias,
                const MoeRouteParams& params, const TensorView& topk_ids,
                const TensorView& topk_weights) override;
  void MoeExperts(const TensorView& x, const TensorView& topk_ids, const TensorView& topk_weights,
                  std::span<const ExpertWeights> experts, int64_t expert_begin,
                  const TensorView& out) override;
  // Takes the shared expert into the grouped FP8 experts (one more expert, weight 1) when the
  // grouped path runs and the shared expert has the routed experts' shapes and layout.
  bool MoeExpertsWithShared(const TensorView& x, const TensorView& topk_ids,
                            const TensorView& topk_weights, std::span<const ExpertWeights> experts,
                            int64_t expert_begin, const ExpertWeights& shared,
                            const TensorView& out) override;

  cudaStream_t stream() const { return stream_; }

  // CUDA graphs for whole decode steps (default Options::cuda_graphs). Off: step_graphs() is
  // null and every step runs eagerly.
  void SetCudaGraphs(bool on) { options_.cuda_graphs = on; }

  // Receives the path each op takes where it has several (FP8 GEMM kernels, MoE paths) and
  // MLA's sub-steps as sections (TimingBackend in benchmarks). Null: none reported.
  void SetOpSections(OpSections* sections) { sections_ = sections; }
  // FP8 MoE batches of at most `tokens` tokens take the small-M grouped kernel (device-side
  // permutation, graph-capturable), larger ones the tiled grouped GEMMs (benchmarks compare the
  // two; the default is kDefaultGroupedMoeMaxTokens).
  void SetGroupedMoeMaxTokens(int64_t tokens) { grouped_moe_max_tokens_ = tokens; }
  // Decode batches up to the graphs' limit (graph_policy.h) stay on the small-M kernel, which
  // needs no host synchronization (~32 rows per expert at 256 tokens).
  static constexpr int64_t kDefaultGroupedMoeMaxTokens = 256;
  // Distinct experts each MoeExperts call ran since the last call of this (benchmarks' HBM floor;
  // synchronizes; the grouped path logs at most kActiveLogSize calls between two takes).
  std::vector<int64_t> TakeActiveExperts();

 private:
  // How one MLA form (kAbsorbed: decode and verify tokens; kNaive: prefill tokens) of a step
  // attends; each path has its own run function in MlaAttention.
  enum class AttentionPath {
    kNone,                // no token of the step takes this form
    kDecodeTensorCores,   // absorbed, over gemm_context keys: the flash decode kernel, or batched
                          // GEMMs at other latent dims (MlaDecodeOnTensorCores)
    kDecodeKernel,        // absorbed, the scalar kernel with split keys (kernels/mla.cu)
    kPrefillTensorCores,  // naive, the flash kernel or GEMMs (MlaPrefillOnTensorCores)
    kPrefillKernel,       // naive, the scalar kernel
  };
  // One step's plan, built by BeginStep (BuildPlan) and read by every layer: the step's host
  // arrays on the device, and per form its tokens, sequence records, path and parameters. A graph
  // step's plan lives in the graph workspace, laid out by the step's shape only, so every step
  // of a shape finds it at the same addresses.
  struct StepPlan {
    const AttentionBatch* batch = nullptr;  // the step's batch (ops assert they get it)
    std::vector<int32_t> token_ids_host, positions_host;  // Embedding and Rope compare with these
    Tensor token_ids;     // [T] I32
    Tensor positions;     // [T] I32
    Tensor slots;         // [T] I64
    Tensor token_seq;     // [T] I32
    Tensor block_tables;  // concatenated I32
    std::vector<int32_t> table_offsets;  // per sequence
    struct Form {
      AttentionPath path = AttentionPath::kNone;
      int64_t tokens = 0;
      Tensor token_rows;        // [tokens] I32
      Tensor sequences;         // kernels::MlaSequence per sequence
      Tensor context_slots;     // naive: cache slots of every context row, I32
      int64_t context_rows = 0;
      // The form's sequences on the host (naive: attention by GEMMs walks them).
      struct HostSequence {
        int32_t token_begin, num_tokens, context_begin, dense_offset;
      };
      std::vector<HostSequence> host_sequences;
      // Absorbed form: one kernels::MlaGemmItem per token (decode by GEMMs: a token of a verify
      // step attends over its own prefix, as a decode step of that token would), the longest
      // context and the sum of contexts over those items.
      Tensor gemm_items;
      // Naive form on tensor cores: one kernels::FlashMlaTile per query tile, longest first
      // (FlashMlaTiles).
      Tensor flash_tiles;
      int64_t max_context = 0, total_context = 0;
      // kDecodeTensorCores: the context every item pads to: the longest, or a graph step's
      // padded_context (one graph serves every step of the bucket).
      int64_t gemm_context = 0;
    };
    Form absorbed, naive;
  };

  CudaBackend() = default;
  // A named part of an op, reported to sections_ (when set) over the object's lifetime.
  class Section {
   public:
    Section(CudaBackend& backend, const char* name) : sections_(backend.sections_) {
      if (sections_ != nullptr) sections_->BeginSection(name);
    }
    ~Section() {
      if (sections_ != nullptr) sections_->EndSection();
    }
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

   private:
    OpSections* sections_;
  };
  // Counts `t` in DeviceMemory::weight_bytes until it is freed (a weight, or a copy or table
  // derived from one that lives as long as it does).
  void CountAsWeight(const Tensor& t);
  // Device copy of host memory (stream-ordered; the host buffer may be reused at once).
  Tensor UploadBytes(const void* host, DType dtype, std::initializer_list<int64_t> shape);
  void BuildPlan(const AttentionBatch& batch);
  // The absorbed or naive form of plan_ for batch.mla_mode (cuda_attention.cc).
  void BuildForm(const AttentionBatch& batch, bool naive, StepPlan::Form& form);
  // The graph workspace, reset, with room for `bytes`; a bigger one (a new address, so a new
  // plan epoch) when it has less.
  ArenaAllocator& GraphWorkspace(int64_t bytes);
  // The device copy of `host`: the plan's when the values are the step's, else uploaded into
  // `scratch`.
  const int32_t* DeviceIndices(std::span<const int32_t> host, const std::vector<int32_t>& planned,
                               const Tensor& planned_device, Tensor& scratch);
  const float* DeviceInvFreq(const RopeParams& rope);
  // MLA's inputs in the one-kernel forms (PrepareMlaInputs, MlaQueryAndInputs): whether they
  // take them, and the kernel's parameters (positions on the device).
  bool MlaInputsFusable(const MlaInputs& in, const RopeParams& rope,
                        const TensorView& cache) const;
  kernels::MlaInputsParams MlaInputsKernelParams(const MlaInputs& in,
                                                 const TensorView& norm_weight, float eps,
                                                 const int32_t* positions,
                                                 const RopeParams& rope, const TensorView& cache);
  // An FP8 weight [n, k] (rows weight_pitch bytes apart) with its block scales [ceil(n/128),
  // ceil(k/128)] (rows scale_pitch floats apart), both in host memory, padded and uploaded.
  LinearWeight UploadFp8Linear(const uint8_t* weight, int64_t weight_pitch, int64_t n, int64_t k,
                               const float* scales, int64_t scale_pitch,
                               std::vector<Tensor>& storage);
  // Ops that upload from pageable memory or wait on the host call this: it makes the step being
  // measured unfit for capture (and aborts inside a capture, which would be a bug).
  void NoteHostWork(const char* what);
  // MLA attention on tensor cores (cuda_attention_gemm.cc). Decode: the absorbed form of
  // `form`'s items (one per token), q [T, nh, nope + rope] (q_pe rotated), q_lat [T, nh * lora],
  // o_lat [T, nh * lora] (rows of the form's tokens written); the flash decode kernel at lora
  // 512 / rope 64, cuBLASLt GEMMs otherwise. Prefill: the naive form, kv [context_rows, nh *
  // (nope + v)] and latents [context_rows, lora + rope] of the form's context rows, out [T, nh *
  // v]; the flash kernel at V3's head dims, GEMMs otherwise.
  static bool DecodeByGemm(int64_t sequences, int64_t total_context, int64_t max_context);
  // The latent dims the flash decode kernel serves (kv_lora_rank 512, rope 64).
  static bool FlashDecodeDims(int64_t kv_lora_rank, int64_t rope_dim);
  // deferred (optional): a flash launch of one item in several splits then leaves their merge
  // to the caller (its W_UV kernel): *deferred describes the partials, which `scratch` keeps.
  void MlaDecodeOnTensorCores(const TensorView& q, const TensorView& q_lat,
                              const TensorView& cache, const StepPlan::Form& form,
                              int32_t block_size, const MlaParams& p, const TensorView& o_lat,
                              kernels::FlashSplitPartials* deferred = nullptr,
                              Tensor* scratch = nullptr);
  void MlaDecodeByGemm(const TensorView& q, const TensorView& q_lat, const TensorView& cache,
                       const StepPlan::Form& form, int32_t block_size, const MlaParams& p,
                       const TensorView& o_lat);
  void MlaPrefillOnTensorCores(const TensorView& q, const TensorView& kv,
                               const TensorView& latents, const StepPlan::Form& form,
                               const MlaParams& p, const TensorView& out);
  // The naive form's query tiles for the flash kernel, uploaded (forms of at least
  // kPrefillTensorCoreMinTokens tokens, the ones MlaPrefillOnTensorCores serves).
  Tensor FlashMlaTiles(const StepPlan::Form& form);
  // The BF16 [N, K] form of a linear weight (dequantized once and cached for FP8 weights).
  TensorView Bf16Weight(const LinearWeight& w);
  // y = x W^T by cuBLASLt block scaling, from the quantized x (xq [M_pad, K_pad], scales xs
  // [K_pad/128, M_pad]); D in F32 or BF16 (f32_out), converted into y where y differs. add_to_y:
  // y += x W^T in the GEMM's epilogue, where D is y itself (y of D's type, M_pad = M, N_pad = N).
  absl::Status Fp8Gemm(const Tensor& xq, const Tensor& xs, const LinearWeight& w, int64_t m,
                       int64_t m_pad, int64_t n_pad, int64_t k_pad, bool f32_out,
                       const TensorView& y, bool add_to_y = false);
  // y = x W^T for an FP8 weight: `quantize` writes x's 1x128 quantization into the buffers it is
  // given (xq [M_pad, K_pad] e4m3, xs [K_pad/128, M_pad] F32; M_pad = M rounded up to 4), then
  // the small-M kernel or cuBLASLt. x (BF16 [M, K]) is read only by the fallback to a BF16
  // weight.
  using QuantizeInto =
      absl::FunctionRef<void(uint8_t* xq, float* xs, int64_t m_pad, int64_t k_pad)>;
  // rope (optional; at most kSmallFp8Rows rows, BF16 y): RoPE of y's columns as the small-M
  // kernel stores them (kernels::RopeEpilogue).
  void Fp8Linear(const TensorView& x, const LinearWeight& w, const TensorView& y,
                 QuantizeInto quantize, const kernels::RopeEpilogue* rope = nullptr);
  // x [M, K] BF16 quantized as Fp8Linear's quantize step writes it (xq [m_pad, k_pad], xs
  // [k_pad / 128, m_pad]).
  void QuantizeRows(const TensorView& x, uint8_t* xq, float* xs, int64_t m_pad, int64_t k_pad);
  // Where MlaAttention's output also goes quantized (MlaAttentionLinear): codes [q_rows,
  // q_stride] e4m3 and scales [q_stride / 128, q_rows], as Fp8Linear's quantize step writes them.
  struct QuantizedOutput {
    uint8_t* q;
    float* scales;
    int64_t q_rows, q_stride;
  };
  // MlaAttention; with `quantized`, also its output quantized where W_UV's kernel can write it,
  // which it returns (false: the caller quantizes out itself).
  bool MlaAttentionInto(const TensorView& q, const TensorView& cache, const LinearWeight& kv_b,
                        const AttentionBatch& batch, const MlaParams& params,
                        const TensorView& out, const QuantizedOutput* quantized);
  // Whether AddRmsNorm and RmsNormLinear of `rows` rows run as one kernel: with fuse_norms, up
  // to kFusedNormMaxRows and from kernels::kNormManyRows rows.
  bool FusesNorms(int64_t rows) const;
  // The norm kernel's arguments: out = RmsNorm(x + *add, or x) * weight (RmsNorm, AddRmsNorm and
  // RmsNormLinear's norm).
  static kernels::RmsNormParams NormParams(const TensorView& x, const TensorView* add,
                                           const TensorView& weight, float eps,
                                           const TensorView& out);
  // y = x W^T for a BF16 weight view [N, K] (y += x W^T with add_to_y).
  void Bf16Linear(const TensorView& x, const TensorView& w, const TensorView& y,
                  bool add_to_y = false);
  void Check(const absl::Status& status, const char* what);
  // MoeExperts for FP8 experts (cuda_moe_grouped.cc): the permutation built on the device and one
  // grouped GEMM launch each for gate|up and down over every active expert; `tiled` (large
  // batches): each expert's rows in 64-row tiles of the wgmma kernel, else the small-M kernel.
  // shared (optional): the shared expert, run as local expert experts.size() for every token.
  void GroupedFp8Experts(const TensorView& x, const TensorView& topk_ids,
                         const TensorView& topk_weights, std::span<const ExpertWeights> experts,
                         int64_t expert_begin, const ExpertWeights* shared, const TensorView& out,
                         bool tiled);
  // The next entry of the active-experts log (benchmark statistics), or null when the log is
  // full or a graph is being captured.
  int32_t* ActiveLogSlot();
  // Device table [experts, 3] of the experts' gate, up and down (made once per layer).
  // The device table [experts (+ shared), 3] of gate, up, down (cached per first weight).
  const kernels::GroupedWeight* GroupedWeights(std::span<const ExpertWeights> experts,
                                               const ExpertWeights* shared);

  Options options_;
  int multiprocessors_ = 1;  // the device's SMs (kernel grid sizing)
  cudaStream_t stream_ = nullptr;
  // The tensors CountAsWeight counted, by address: the pool's free callback forgets them, so
  // they are declared before the pool, to outlive every tensor it frees.
  std::unordered_map<const void*, int64_t> weight_tensors_;
  int64_t weight_bytes_ = 0;
  std::unique_ptr<StreamAllocator> allocator_;
  ArenaAllocator* active_arena_ = nullptr;

  // ---- Whole-step CUDA graphs (cuda_step_graphs.cc) ----
  friend class CudaStepGraphs;
  std::unique_ptr<StepGraphCapture> graphs_;
  bool measuring_ = false, host_work_ = false, capturing_ = false;
  int64_t graph_memory_limit_ = INT64_MAX;
  // Graph steps' plans (AttentionBatch::padded_context > 0); plan_epoch_ counts its moves.
  Tensor graph_workspace_;
  std::unique_ptr<ArenaAllocator> graph_workspace_arena_;
  uint64_t plan_epoch_ = 0;
  int64_t free_at_start_ = 0;  // cudaMemGetInfo's free bytes when Create made the context
  std::unique_ptr<CublasLtGemm> gemm_;
  StepPlan plan_;
  std::unordered_map<const float*, std::pair<std::vector<float>, Tensor>> inv_freq_;
  // BF16 copies of FP8 weights by weight address; an entry goes when its weight is freed.
  std::unordered_map<const void*, Tensor> dequantized_;
  int64_t grouped_moe_max_tokens_ = kDefaultGroupedMoeMaxTokens;
  OpSections* sections_ = nullptr;
  std::vector<int64_t> active_experts_;
  // Grouped weight tables by the first expert's gate weight; an entry goes with that weight.
  std::unordered_map<const void*, Tensor> grouped_weights_;
  static constexpr int64_t kActiveLogSize = 4096;
  Tensor active_log_;  // [kActiveLogSize] I32: active experts of grouped calls, on the device
  int64_t active_logged_ = 0;
  // [1]: the fused router's ticket (kernels::MoeRouterTopk), zeroed once; every launch leaves it 0.
  Tensor router_ticket_;
};

}  // namespace dsv3
