// MLA attention on tensor cores for the shapes where the one-warp-per-(token, head) kernel of
// kernels/mla.cu is slowest: long prefills (naive form) and large decode batches (absorbed form).
// Prefill at DeepSeek-V3's head dims (nope 128, rope 64, v 128) takes the fused causal flash
// kernel of kernels/flash_mla_prefill.cu: one launch per step over every sequence's query tiles,
// scores kept on chip (H200, T = 4096, 128 heads: 1.2 ms per layer against 6.9 ms for the GEMMs
// below, which also needed up to kScratchBytes of scratch). Other dims, and decode, go through
// cuBLASLt GEMMs with the scores in device memory as F32. Either way the probabilities are
// rounded to BF16 for the weighted sum, as FlashAttention-style kernels do. GEMM work is chunked
// (over sequences for decode, over heads for prefill) so that the scratch of one chunk stays
// near kScratchBytes.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/graph_policy.h"
#include "kernels/attention_gemm.cuh"
#include "kernels/flash_mla_decode.cuh"
#include "kernels/flash_mla_prefill.cuh"
#include "kernels/launch_check.h"

namespace dsv3 {

namespace {

constexpr int64_t kScratchBytes = int64_t{1} << 30;
// Prefill runs: 512 tokens compute ~56% of a 4096-token causal square (8 runs) while each run's
// GEMMs stay large (512 x context per head).
constexpr int64_t kCausalRunTokens = 512;
// Decode steps attend by GEMMs (one item per new token, over its prefix) when padding every item
// to the longest context wastes at most half the work. The GEMMs beat the split-key kernel at
// every batch size on the H200 (docs/journal/2026-11-28-h200-runs.md), so they serve from one
// sequence on.
constexpr int64_t kDecodeGemmMinSequences = 1;

const void* Offset(const void* p, int64_t bytes) { return static_cast<const char*>(p) + bytes; }
void* Offset(void* p, int64_t bytes) { return static_cast<char*>(p) + bytes; }

}  // namespace

bool CudaBackend::FlashDecodeDims(int64_t kv_lora_rank, int64_t rope_dim) {
  return kv_lora_rank == kernels::kFlashDecodeLora && rope_dim == kernels::kFlashDecodeRope;
}

bool CudaBackend::DecodeByGemm(int64_t sequences, int64_t total_context, int64_t max_context) {
  return sequences >= kDecodeGemmMinSequences &&
         EvenEnoughForGemmDecode(sequences, total_context, max_context);
}

void CudaBackend::MlaDecodeOnTensorCores(const TensorView& q, const TensorView& q_lat,
                                         const TensorView& cache, const StepPlan::Form& form,
                                         int32_t block_size, const MlaParams& p,
                                         const TensorView& o_lat,
                                         kernels::FlashSplitPartials* deferred, Tensor* scratch) {
  const int64_t nh = p.num_heads, lora = p.kv_lora_rank, rope = p.rope_dim;
  if (!FlashDecodeDims(lora, rope) || q.strides[1] % 8 != 0 || q.strides[0] % 8 != 0 || p.nope_dim % 8 != 0) {
    MlaDecodeByGemm(q, q_lat, cache, form, block_size, p, o_lat);
    return;
  }
  kernels::FlashMlaDecodeParams a{};
  a.q_lat = q_lat.data;
  a.q_lat_token_stride = q_lat.strides[0];
  a.q_lat_head_stride = lora;
  a.q_pe = Offset(q.data, p.nope_dim * 2);
  a.q_pe_token_stride = q.strides[0];
  a.q_pe_head_stride = q.strides[1];
  a.cache = cache.data;
  a.cache_rows = cache.dim(0) * cache.dim(1);
  a.block_size = block_size;
  a.block_tables = plan_.block_tables.ptr<int32_t>();
  a.items = static_cast<const kernels::MlaGemmItem*>(form.gemm_items.view().data);
  a.num_items = static_cast<int32_t>(form.tokens);
  a.heads = static_cast<int32_t>(nh);
  a.scale = p.softmax_scale;
  a.parts = options_.flash_decode_parts > 0
                ? std::min(options_.flash_decode_parts, kernels::kFlashDecodeMaxParts)
                : kernels::FlashMlaDecodeParts(form.tokens, nh, form.gemm_context,
                                               multiprocessors_);
  Tensor partial;
  if (const int64_t floats = kernels::FlashMlaDecodePartialFloats(nh, a.parts)) {
    partial = Tensor(allocator(), DType::kF32, {floats});
    a.partial = partial.ptr<float>();
  }
  a.out = o_lat.data;
  a.out_token_stride = o_lat.strides[0];
  a.out_head_stride = lora;
  a.defer_merge = deferred != nullptr && form.tokens == 1 && a.parts > 1;
  kernels::FlashMlaDecode(a, stream_);
  if (a.defer_merge) {
    *deferred = kernels::FlashSplitPartialsOf(a);
    *scratch = std::move(partial);
  }
}

void CudaBackend::MlaDecodeByGemm(const TensorView& q, const TensorView& q_lat,
                                  const TensorView& cache, const StepPlan::Form& form,
                                  int32_t block_size, const MlaParams& p,
                                  const TensorView& o_lat) {
  const int64_t nh = p.num_heads, lora = p.kv_lora_rank, rope = p.rope_dim;
  const int64_t kv_dim = lora + rope, ctx = form.gemm_context;
  const int64_t num_items = form.tokens;  // one item per token
  // Per sequence: latents [ctx, kv_dim] BF16, scores F32 and probs BF16 [nh, ctx], query and
  // output [nh, kv_dim] BF16.
  const int64_t per_item = ctx * (kv_dim * 2 + nh * 6) + nh * kv_dim * 4;
  const int64_t chunk = std::clamp<int64_t>(kScratchBytes / per_item, 1, num_items);
  const auto* items = static_cast<const kernels::MlaGemmItem*>(form.gemm_items.view().data);
  for (int64_t i0 = 0; i0 < num_items; i0 += chunk) {
    const int64_t n = std::min(chunk, num_items - i0);
    Tensor latents(allocator(), DType::kBF16, {n, ctx, kv_dim});
    kernels::GatherLatents({cache.data, kv_dim, block_size, plan_.block_tables.ptr<int32_t>(),
                            items + i0, n, ctx, latents.view().data},
                           stream_);
    // [q_lat | q_pe] per head: the latent rows hold [c | k_pe].
    Tensor query(allocator(), DType::kBF16, {n, nh, kv_dim});
    kernels::GatherQuery({q_lat.data, q_lat.strides[0], lora, lora,
                          Offset(q.data, p.nope_dim * 2), q.strides[0], q.strides[1], rope,
                          items + i0, n, nh, query.view().data},
                         stream_);
    // Per sequence, column-major: scores [ctx, nh] = latents^T [ctx, kv_dim] x query [kv_dim, nh].
    Tensor scores(allocator(), DType::kF32, {n, nh, ctx});
    Bf16GemmArgs s;
    s.trans_a = true;
    s.m = ctx;
    s.n = nh;
    s.k = kv_dim;
    s.a = latents.view().data;
    s.lda = kv_dim;
    s.stride_a = ctx * kv_dim;
    s.b = query.view().data;
    s.ldb = kv_dim;
    s.stride_b = nh * kv_dim;
    s.d = scores.view().data;
    s.ldd = ctx;
    s.stride_d = nh * ctx;
    s.d_f32 = true;
    s.batch = static_cast<int32_t>(n);
    Check(gemm_->Bf16(s), "MLA decode scores");
    Tensor probs(allocator(), DType::kBF16, {n, nh, ctx});
    kernels::MaskedSoftmax({scores.ptr<float>(), probs.view().data, n * nh, ctx,
                            p.softmax_scale, items + i0, nh, 0, 1},
                           stream_);
    // out [lora, nh] = c [lora, ctx] x probs [ctx, nh] (c: the first lora columns of latents).
    Tensor out(allocator(), DType::kBF16, {n, nh, lora});
    Bf16GemmArgs o;
    o.m = lora;
    o.n = nh;
    o.k = ctx;
    o.a = latents.view().data;
    o.lda = kv_dim;
    o.stride_a = ctx * kv_dim;
    o.b = probs.view().data;
    o.ldb = ctx;
    o.stride_b = nh * ctx;
    o.d = out.view().data;
    o.ldd = lora;
    o.stride_d = nh * lora;
    o.batch = static_cast<int32_t>(n);
    Check(gemm_->Bf16(o), "MLA decode weighted sum");
    kernels::ScatterItemRows({out.view().data, nh * lora, items + i0, n, nh * lora, o_lat.data,
                              o_lat.strides[0]},
                             stream_);
  }
}

Tensor CudaBackend::FlashMlaTiles(const StepPlan::Form& form) {
  std::vector<kernels::FlashMlaTile> tiles;
  for (const StepPlan::Form::HostSequence& seq : form.host_sequences) {
    for (int32_t i = 0; i < seq.num_tokens; i += kernels::kFlashMlaTileTokens) {
      tiles.push_back({seq.token_begin + i,
                       std::min(kernels::kFlashMlaTileTokens, seq.num_tokens - i),
                       seq.context_begin + i, seq.dense_offset});
    }
  }
  // A tile's work is its key count: the longest start first and the short ones fill the tail.
  std::stable_sort(tiles.begin(), tiles.end(), [](const auto& a, const auto& b) {
    return a.pos + a.rows > b.pos + b.rows;
  });
  return UploadBytes(tiles.data(), DType::kI32, {static_cast<int64_t>(tiles.size()), 4});
}

void CudaBackend::MlaPrefillOnTensorCores(const TensorView& q, const TensorView& kv,
                                          const TensorView& latents, const StepPlan::Form& form,
                                          const MlaParams& p, const TensorView& out) {
  const int64_t nh = p.num_heads, nope = p.nope_dim, rope = p.rope_dim, vd = p.v_dim;
  const int64_t qk = nope + rope, head_rows = nope + vd, lora = p.kv_lora_rank;
  const auto aligned = [](const void* ptr, int64_t stride) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && stride % 8 == 0;
  };
  if (nope == kernels::kFlashMlaNope && rope == kernels::kFlashMlaRope &&
      vd == kernels::kFlashMlaV && lora % 8 == 0 && aligned(q.data, q.strides[0]) &&
      q.strides[1] % 8 == 0 && aligned(kv.data, kv.strides[0]) &&
      aligned(latents.data, latents.strides[0]) && aligned(out.data, out.strides[0])) {
    kernels::FlashMlaPrefill(
        {q.data, q.strides[0], q.strides[1], kv.data, kv.strides[0], latents.data,
         latents.strides[0], lora, out.data, out.strides[0],
         static_cast<const kernels::FlashMlaTile*>(form.flash_tiles.view().data),
         static_cast<int32_t>(form.flash_tiles.view().dim(0)), static_cast<int32_t>(nh),
         p.softmax_scale},
        stream_);
    return;
  }
  // keys [context_rows, nh, qk]: each head's k_nope with the shared k_pe, laid out as q is.
  Tensor keys(allocator(), DType::kBF16, {form.context_rows, nh, qk});
  kernels::AssembleKeys({kv.data, kv.strides[0], head_rows, nope, latents.data,
                         latents.strides[0], lora, rope, form.context_rows, nh,
                         keys.view().data},
                        stream_);
  // Runs of at most kCausalRunTokens tokens, each a sequence of its own over the same context
  // rows (its keys are the first context_begin + tokens of them): a run's GEMMs skip the keys
  // after its last token, so a long prompt computes a little over half of its causal square
  // instead of all of it; and a long chunk after a long context, whose single-head scores
  // [t, ctx] would pass kScratchBytes, gets shorter runs still.
  std::vector<StepPlan::Form::HostSequence> runs;
  for (const StepPlan::Form::HostSequence& seq : form.host_sequences) {
    const int64_t ctx = seq.context_begin + seq.num_tokens;
    const int64_t run =
        std::clamp<int64_t>(kScratchBytes / (ctx * 6), 1, kCausalRunTokens);
    for (int32_t i0 = 0; i0 < seq.num_tokens; i0 += static_cast<int32_t>(run)) {
      const int32_t n = static_cast<int32_t>(std::min<int64_t>(run, seq.num_tokens - i0));
      runs.push_back({seq.token_begin + i0, n, seq.context_begin + i0, seq.dense_offset});
    }
  }
  for (const StepPlan::Form::HostSequence& seq : runs) {
    const int64_t t = seq.num_tokens, ctx = seq.context_begin + seq.num_tokens;
    const int64_t heads_per_chunk = std::clamp<int64_t>(kScratchBytes / (t * ctx * 6), 1, nh);
    for (int64_t h0 = 0; h0 < nh; h0 += heads_per_chunk) {
      const int64_t hc = std::min(heads_per_chunk, nh - h0);
      // Per head, column-major: scores [ctx, t] = keys_h^T [ctx, qk] x q_h [qk, t].
      Tensor scores(allocator(), DType::kF32, {hc, t, ctx});
      Bf16GemmArgs s;
      s.trans_a = true;
      s.m = ctx;
      s.n = t;
      s.k = qk;
      s.a = Offset(keys.view().data, ((seq.dense_offset * nh) + h0) * qk * 2);
      s.lda = nh * qk;
      s.stride_a = qk;
      s.b = Offset(q.data, (seq.token_begin * q.strides[0] + h0 * q.strides[1]) * 2);
      s.ldb = q.strides[0];
      s.stride_b = q.strides[1];
      s.d = scores.view().data;
      s.ldd = ctx;
      s.stride_d = t * ctx;
      s.d_f32 = true;
      s.batch = static_cast<int32_t>(hc);
      Check(gemm_->Bf16(s), "MLA prefill scores");
      Tensor probs(allocator(), DType::kBF16, {hc, t, ctx});
      kernels::MaskedSoftmax({scores.ptr<float>(), probs.view().data, hc * t, ctx,
                              p.softmax_scale, nullptr, nh, seq.context_begin, t},
                             stream_);
      // out_h [v, t] = V_h [v, ctx] x probs_h [ctx, t]; V_h: columns [nope, nope + v) of the
      // head's kv rows.
      Bf16GemmArgs o;
      o.m = vd;
      o.n = t;
      o.k = ctx;
      o.a = Offset(kv.data, (seq.dense_offset * kv.strides[0] + h0 * head_rows + nope) * 2);
      o.lda = kv.strides[0];
      o.stride_a = head_rows;
      o.b = probs.view().data;
      o.ldb = ctx;
      o.stride_b = t * ctx;
      o.d = Offset(out.data, (seq.token_begin * out.strides[0] + h0 * vd) * 2);
      o.ldd = out.strides[0];
      o.stride_d = vd;
      o.batch = static_cast<int32_t>(hc);
      Check(gemm_->Bf16(o), "MLA prefill weighted sum");
    }
  }
}

}  // namespace dsv3
