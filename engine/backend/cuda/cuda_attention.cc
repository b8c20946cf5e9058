// MLA on the GPU (SPEC section 3): the naive form for prefill (latents up-projected to per-head
// K and V by one GEMM over every context row of the step) and the absorbed form for decode
// (W_UK folded into the query and W_UV into the output, by a weight-streaming kernel up to 8
// tokens and batched GEMMs beyond, attention over the cached latents).
#include <algorithm>

#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/graph_policy.h"
#include "kernels/attention_gemm.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/flash_mla_decode.cuh"
#include "kernels/launch_check.h"
#include "kernels/mla.cuh"
#include "kernels/mla_absorb.cuh"
#include "kernels/moe_grouped.cuh"

namespace dsv3 {

namespace {

// Prefill steps with at least this many naive-form tokens attend on tensor cores (the flash kernel,
// or GEMMs at other head dims); fewer take the scalar kernel, whose launch is cheaper.
constexpr int64_t kPrefillTensorCoreMinTokens = 64;

// Under kAuto the absorbed form serves sequences of up to kAbsorbedMaxNewTokens new tokens
// (decode, speculative verify): each token reads the cached latents once per head group instead
// of up-projecting the whole context to per-head K/V.
bool UsesNaive(MlaMode mode, const AttentionBatch::Sequence& seq) {
  return mode == MlaMode::kNaive ||
         (mode == MlaMode::kAuto && seq.num_tokens > kAbsorbedMaxNewTokens);
}

// Key splits for the absorbed (decode) form: enough blocks to fill the H200's 132 SMs about four
// times over, each split at least 64 keys, at most 16 splits.
int32_t KeySplits(int64_t max_context, int64_t tokens, int64_t heads) {
  const int64_t blocks = (heads + 3) / 4 * tokens;
  const int64_t wanted = (4 * 132 + blocks - 1) / blocks;
  return static_cast<int32_t>(std::clamp<int64_t>(std::min<int64_t>(wanted, max_context / 64), 1, 16));
}

}  // namespace

void CudaBackend::WriteKvCache(const TensorView& latent, const AttentionBatch& batch,
                               const TensorView& cache) {
  assert(latent.dtype == DType::kBF16 && cache.dtype == DType::kBF16);
  assert(plan_.batch == &batch && "WriteKvCache needs BeginStep(batch) first");
  kernels::WriteKvCache({latent.data, latent.strides[0], plan_.slots.ptr<int64_t>(), cache.data,
                         cache.dim(2), latent.dim(0)},
                        stream_);
}

// Whether MLA's inputs take the one-kernel forms: a decode-sized step whose c and k_pe are the
// latent's two column ranges (the model's layout), all BF16.
bool CudaBackend::MlaInputsFusable(const MlaInputs& in, const RopeParams& rope,
                                   const TensorView& cache) const {
  const int64_t t = in.latent.dim(0), kv_lora = in.c.dim(1);
  return options_.fuse_norms && t <= kFusedNormMaxRows && in.latent.dtype == DType::kBF16 &&
         in.q_pe.dtype == DType::kBF16 && cache.dtype == DType::kBF16 &&
         in.c.data == in.latent.data && in.k_pe.data == in.latent.ptr<uint16_t>() + kv_lora &&
         cache.dim(2) == in.latent.dim(1) && in.latent.dim(1) == kv_lora + rope.rope_dim;
}

kernels::MlaInputsParams CudaBackend::MlaInputsKernelParams(const MlaInputs& in,
                                                            const TensorView& norm_weight,
                                                            float eps, const int32_t* positions,
                                                            const RopeParams& rope,
                                                            const TensorView& cache) {
  const float* inv_freq = DeviceInvFreq(rope);
  auto rope_of = [&](const TensorView& x) -> kernels::RopeParams {
    return {x.data, x.strides[0], x.strides[1], x.dim(0), x.dim(1), rope.rope_dim, positions,
            inv_freq, rope.attention_factor, rope.interleaved};
  };
  return {NormParams(in.c, nullptr, norm_weight, eps, in.c), rope_of(in.k_pe), rope_of(in.q_pe),
          plan_.slots.ptr<int64_t>(), cache.data, cache.dim(2)};
}

void CudaBackend::PrepareMlaInputs(const MlaInputs& in, const TensorView& norm_weight, float eps,
                                   std::span<const int32_t> positions, const RopeParams& rope,
                                   const AttentionBatch& batch, const TensorView& cache) {
  if (!MlaInputsFusable(in, rope, cache)) {
    Backend::PrepareMlaInputs(in, norm_weight, eps, positions, rope, batch, cache);
    return;
  }
  assert(plan_.batch == &batch && "PrepareMlaInputs needs BeginStep(batch) first");
  Tensor scratch;
  const int32_t* pos = DeviceIndices(positions, plan_.positions_host, plan_.positions, scratch);
  kernels::MlaInputs(MlaInputsKernelParams(in, norm_weight, eps, pos, rope, cache), stream_);
}

void CudaBackend::MlaQueryAndInputs(const MlaQueryArgs& a, std::span<const int32_t> positions,
                                    const RopeParams& rope, const AttentionBatch& batch,
                                    const TensorView& cache) {
  const MlaInputs& in = a.inputs;
  const LinearWeight& w = *a.q_b;
  const int64_t t = a.q_lat.dim(0);
  // q_pe: columns [rope_begin, rope_begin + rope) of every head_cols columns of q.
  const int64_t head_cols = in.q_pe.strides[1];
  const int64_t rope_begin =
      (static_cast<const char*>(in.q_pe.data) - static_cast<const char*>(a.q.data)) / 2;
  const bool fusable =
      options_.fuse_mla_query && MlaInputsFusable(in, rope, cache) && t >= 1 &&
      w.weight.dtype == DType::kF8E4M3 && a.q_lat.dtype == DType::kBF16 &&
      a.q.dtype == DType::kBF16 && a.q.strides[1] == 1 && rope.interleaved &&
      in.q_pe.strides[0] == a.q.strides[0] && in.q_pe.strides[2] == 1 &&
      in.q_pe.dim(1) * head_cols == a.q.dim(1) && rope_begin >= 0 && rope_begin % 2 == 0 &&
      head_cols % 2 == 0 && rope_begin + rope.rope_dim <= head_cols;
  static_assert(kFusedNormMaxRows <= kSmallFp8Rows, "q_b's RoPE epilogue is the small-M kernel's");
  if (!fusable) {
    Backend::MlaQueryAndInputs(a, positions, rope, batch, cache);
    return;
  }
  assert(plan_.batch == &batch && "MlaQueryAndInputs needs BeginStep(batch) first");
  Tensor scratch;
  const int32_t* pos = DeviceIndices(positions, plan_.positions_host, plan_.positions, scratch);
  Section path(*this, "- mla query: latents beside q_a's norm, q_pe's RoPE in q_b's GEMM");
  const kernels::MlaInputsParams latents =
      MlaInputsKernelParams(in, a.kv_a_norm, a.eps, pos, rope, cache);
  const kernels::RopeEpilogue q_pe_rope{pos,
                                        latents.k_rope.inv_freq,
                                        rope.attention_factor,
                                        static_cast<int32_t>(head_cols),
                                        static_cast<int32_t>(rope_begin),
                                        static_cast<int32_t>(rope.rope_dim)};
  Fp8Linear(
      a.q_lat, w, a.q,
      [&](uint8_t* xq, float* xs, int64_t m_pad, int64_t k_pad) {
        kernels::RmsNormQuantizeMlaLatents(
            {NormParams(a.q_lat, nullptr, a.q_a_norm, a.eps, a.q_lat), xq, xs, m_pad, k_pad,
             options_.ue8m0_activation_scales},
            latents, stream_);
      },
      &q_pe_rope);
}

void CudaBackend::BuildForm(const AttentionBatch& batch, bool naive, StepPlan::Form& form) {
  const MlaMode mode = batch.mla_mode;
  const StepPlan& plan = plan_;
  std::vector<int32_t> rows, slots;
  std::vector<kernels::MlaSequence> seqs(batch.sequences.size());
  std::vector<kernels::MlaGemmItem> items;
  bool short_sequences = true;  // every sequence of the form has <= kAbsorbedMaxNewTokens
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const auto& seq = batch.sequences[s];
    seqs[s] = {seq.token_begin, seq.context_begin, plan.table_offsets[s], -1};
    if (UsesNaive(mode, seq) != naive) continue;
    for (int32_t i = 0; i < seq.num_tokens; ++i) rows.push_back(seq.token_begin + i);
    short_sequences = short_sequences && seq.num_tokens <= kAbsorbedMaxNewTokens;
    form.host_sequences.push_back({seq.token_begin, seq.num_tokens, seq.context_begin,
                                   naive ? static_cast<int32_t>(slots.size()) : -1});
    // Absorbed: one item per token, over its causal prefix (the step wrote its latents already).
    for (int32_t i = naive ? seq.num_tokens - 1 : 0; i < seq.num_tokens; ++i) {
      const int32_t visible = seq.context_begin + i + 1;
      if (!naive) items.push_back({seq.token_begin + i, plan.table_offsets[s], visible, 0});
      form.max_context = std::max<int64_t>(form.max_context, visible);
      form.total_context += visible;
    }
    if (naive) {
      seqs[s].dense_offset = static_cast<int32_t>(slots.size());
      const int32_t ctx = seq.context_begin + seq.num_tokens;
      for (int32_t p = 0; p < ctx; ++p) {
        slots.push_back(seq.block_table[p / batch.block_size] * batch.block_size +
                        p % batch.block_size);
      }
    }
  }
  form.tokens = static_cast<int64_t>(rows.size());
  form.context_rows = static_cast<int64_t>(slots.size());
  if (form.tokens == 0) return;  // nothing of the step takes this form: path kNone
  if (naive) {
    form.path = form.tokens >= kPrefillTensorCoreMinTokens ? AttentionPath::kPrefillTensorCores
                                                           : AttentionPath::kPrefillKernel;
  } else if (batch.padded_context > 0) {
    // A graph step (the runner admitted it for decode by GEMMs): its graph pads to the bucket.
    form.path = AttentionPath::kDecodeTensorCores;
    form.gemm_context = batch.padded_context;
  } else {
    // Forced absorbed prefills (MlaMode::kAbsorbed, long sequences) stay on the kernel: an item
    // per token would gather the context once per token. Decode and verify steps take the
    // flash decode kernel at its latent dims, which reads each item's own keys only; at other
    // dims the GEMMs, which pad every item to the longest context, when they are even enough.
    const bool tensor_cores =
        short_sequences && (FlashDecodeDims(batch.kv_lora_rank, batch.rope_dim) ||
                            DecodeByGemm(form.tokens, form.total_context, form.max_context));
    form.path = tensor_cores ? AttentionPath::kDecodeTensorCores : AttentionPath::kDecodeKernel;
    form.gemm_context = form.max_context;
  }
  form.token_rows = UploadBytes(rows.data(), DType::kI32, {form.tokens});
  form.sequences = UploadBytes(seqs.data(), DType::kI32,
                               {static_cast<int64_t>(seqs.size()), 4});
  if (naive) {
    form.context_slots = UploadBytes(slots.data(), DType::kI32, {form.context_rows});
    if (form.path == AttentionPath::kPrefillTensorCores) form.flash_tiles = FlashMlaTiles(form);
  } else {
    kernels::AssignFlashDecodeTiles(items.data(), static_cast<int64_t>(items.size()));
    form.gemm_items = UploadBytes(items.data(), DType::kI32,
                                  {static_cast<int64_t>(items.size()), 4});
  }
}

void CudaBackend::MlaAttention(const TensorView& q, const TensorView& cache,
                               const LinearWeight& kv_b, const AttentionBatch& batch,
                               const MlaParams& p, const TensorView& out) {
  MlaAttentionInto(q, cache, kv_b, batch, p, out, nullptr);
}

void CudaBackend::MlaAttentionLinear(const TensorView& q, const TensorView& cache,
                                     const LinearWeight& kv_b, const AttentionBatch& batch,
                                     const MlaParams& p, const TensorView& attn,
                                     const LinearWeight& o_proj, const TensorView& out) {
  const int64_t t = attn.dim(0);
  if (!options_.quantize_in_w_uv || o_proj.weight.dtype != DType::kF8E4M3 || t == 0 ||
      t > kSmallFp8Rows || !attn.is_contiguous()) {
    Backend::MlaAttentionLinear(q, cache, kv_b, batch, p, attn, o_proj, out);
    return;
  }
  Fp8Linear(attn, o_proj, out, [&](uint8_t* xq, float* xs, int64_t m_pad, int64_t k_pad) {
    const QuantizedOutput quantized{xq, xs, m_pad, k_pad};
    if (!MlaAttentionInto(q, cache, kv_b, batch, p, attn, &quantized)) {
      QuantizeRows(attn, xq, xs, m_pad, k_pad);
    }
  });
}

bool CudaBackend::MlaAttentionInto(const TensorView& q, const TensorView& cache,
                                   const LinearWeight& kv_b, const AttentionBatch& batch,
                                   const MlaParams& p, const TensorView& out,
                                   const QuantizedOutput* quantized) {
  assert(q.dtype == DType::kBF16 && cache.dtype == DType::kBF16 && out.dtype == DType::kBF16);
  const int64_t t = q.dim(0), nh = p.num_heads, nope = p.nope_dim, rope = p.rope_dim;
  const int64_t vd = p.v_dim, lora = p.kv_lora_rank, kv_dim = lora + rope;
  const int64_t head_rows = nope + vd;  // rows of kv_b per head
  assert(lora + rope <= 640 && lora <= 512 && nope + rope <= 640);
  if (t == 0) return false;
  assert(plan_.batch == &batch && p.mode == batch.mla_mode &&
         "MlaAttention needs BeginStep(batch) first, in the batch's mode");
  const StepPlan& plan = plan_;
  const TensorView wkvb = Bf16Weight(kv_b);  // [nh * (nope + v), lora]

  kernels::MlaAttentionParams a{};
  a.q_b = static_cast<const char*>(q.data) + nope * 2;  // q_pe, rotated
  a.q_b_token_stride = q.strides[0];
  a.q_b_head_stride = q.strides[1];
  a.db = static_cast<int32_t>(rope);
  a.heads = nh;
  a.cache = cache.data;
  a.kv_dim = kv_dim;
  a.kpe_offset = static_cast<int32_t>(lora);
  a.block_size = batch.block_size;
  a.block_tables = plan.block_tables.ptr<int32_t>();
  a.token_seq = plan.token_seq.ptr<int32_t>();
  a.scale = p.softmax_scale;

  const StepPlan::Form& absorbed = plan.absorbed;
  const StepPlan::Form& naive = plan.naive;
  bool quantized_out = false;  // W_UV's kernel wrote `quantized`
  if (absorbed.path != AttentionPath::kNone) {
    // q_lat [T, nh, lora]: per head, q_lat_h^T [lora, T] = W_UK_h^T [lora, nope] q_nope_h^T.
    // Up to 8 tokens (decode) the weight-streaming kernel (kernels/mla_absorb.cuh), which starts
    // loading W_UK while the kernel before still runs; else, or at shapes it does not take,
    // cuBLASLt.
    Tensor q_lat(allocator(), DType::kBF16, {t, nh * lora});
    const kernels::MlaAbsorbParams uk_small{.w = wkvb.data,
                                            .w_row_stride = wkvb.strides[0],
                                            .w_head_stride = head_rows * wkvb.strides[0],
                                            .transposed = true,
                                            .m = static_cast<int32_t>(lora),
                                            .k = static_cast<int32_t>(nope),
                                            .x = q.data,
                                            .x_token_stride = q.strides[0],
                                            .x_head_stride = q.strides[1],
                                            .out = q_lat.view().data,
                                            .out_token_stride = nh * lora,
                                            .out_head_stride = lora,
                                            .tokens = static_cast<int32_t>(t),
                                            .heads = static_cast<int32_t>(nh)};
    Bf16GemmArgs uk;
    uk.m = lora;
    uk.n = t;
    uk.k = nope;
    uk.a = wkvb.data;  // W_UK_h: rows [h * head_rows, + nope) of kv_b, column-major lora x nope
    uk.lda = wkvb.strides[0];
    uk.stride_a = head_rows * wkvb.strides[0];
    uk.b = q.data;
    uk.ldb = q.strides[0];
    uk.stride_b = q.strides[1];
    uk.d = q_lat.view().data;
    uk.ldd = nh * lora;
    uk.stride_d = lora;
    uk.batch = static_cast<int32_t>(nh);
    {
      Section part(*this, "- mla: W_UK, W_UV GEMMs");
      if (kernels::MlaAbsorbSupports(uk_small)) {
        kernels::MlaAbsorb(uk_small, stream_);
      } else {
        Check(gemm_->Bf16(uk), "MLA W_UK absorption");
      }
    }

    Tensor o_lat(allocator(), DType::kBF16, {t, nh * lora});  // [T, nh, lora]
    // A one-token step's flash launch in parts may leave its merge to W_UV's kernel below (one
    // kernel fewer on the step's chain), which then reads the partials instead of o_lat.
    kernels::FlashSplitPartials deferred;
    Tensor deferred_scratch;
    a.q_a = q_lat.view().data;
    a.q_a_token_stride = nh * lora;
    a.q_a_head_stride = lora;
    a.da = static_cast<int32_t>(lora);
    a.dv = static_cast<int32_t>(lora);
    a.tokens = absorbed.tokens;
    a.token_rows = absorbed.token_rows.ptr<int32_t>();
    a.sequences = static_cast<const kernels::MlaSequence*>(absorbed.sequences.view().data);
    a.dense_kv = nullptr;
    a.out = o_lat.view().data;
    a.out_token_stride = nh * lora;
    a.out_head_stride = lora;
    // out_h^T [v, T] = W_UV_h [v, lora] o_lat_h^T (the same choice of kernel as W_UK). Rows of
    // tokens the naive form handles get overwritten below.
    const void* w_uv = static_cast<const char*>(wkvb.data) + nope * wkvb.strides[0] * 2;
    kernels::MlaAbsorbParams uv_small{.w = w_uv,
                                      .w_row_stride = wkvb.strides[0],
                                      .w_head_stride = head_rows * wkvb.strides[0],
                                      .transposed = false,
                                      .m = static_cast<int32_t>(vd),
                                      .k = static_cast<int32_t>(lora),
                                      .x = o_lat.view().data,
                                      .x_token_stride = nh * lora,
                                      .x_head_stride = lora,
                                      .out = out.data,
                                      .out_token_stride = out.strides[0],
                                      .out_head_stride = vd,
                                      .tokens = static_cast<int32_t>(t),
                                      .heads = static_cast<int32_t>(nh)};
    if (absorbed.path == AttentionPath::kDecodeTensorCores) {
      Section part(*this, "- mla: absorbed attention (tensor cores)");
      const bool defer = options_.merge_in_w_uv && t == 1 && absorbed.tokens == 1 &&
                         kernels::MlaAbsorbSupports(uv_small);
      MlaDecodeOnTensorCores(q, q_lat, cache, absorbed, batch.block_size, p, o_lat,
                             defer ? &deferred : nullptr, &deferred_scratch);
      uv_small.merge = deferred;
      if (deferred.base != nullptr) Section path(*this, "- mla: pieces merged by W_UV's kernel");
    } else {
      Section part(*this, "- mla: absorbed attention (kernel)");
      a.splits = KeySplits(absorbed.max_context, absorbed.tokens, nh);
      Tensor partial;  // [tokens, nh, splits, 2 + lora] F32
      if (a.splits > 1) {
        partial =
            Tensor(allocator(), DType::kF32, {absorbed.tokens * nh * a.splits * (2 + lora)});
        a.partial = partial.ptr<float>();
      }
      kernels::MlaAttention(a, stream_);
      a.splits = 1;  // the naive form below attends each token in one block
      a.partial = nullptr;
    }

    Bf16GemmArgs uv;
    uv.trans_a = true;
    uv.m = vd;
    uv.n = t;
    uv.k = lora;
    uv.a = w_uv;
    uv.lda = wkvb.strides[0];
    uv.stride_a = head_rows * wkvb.strides[0];
    uv.b = o_lat.view().data;
    uv.ldb = nh * lora;
    uv.stride_b = lora;
    uv.d = out.data;
    uv.ldd = out.strides[0];
    uv.stride_d = vd;
    uv.batch = static_cast<int32_t>(nh);
    Section part(*this, "- mla: W_UK, W_UV GEMMs");
    if (quantized != nullptr && naive.path == AttentionPath::kNone) {
      // Every row is W_UV's (no naive tokens overwrite any).
      kernels::MlaAbsorbParams quantizing = uv_small;
      quantizing.q = quantized->q;
      quantizing.q_scales = quantized->scales;
      quantizing.q_stride = quantized->q_stride;
      quantizing.q_rows = quantized->q_rows;
      quantizing.ue8m0 = options_.ue8m0_activation_scales;
      // o_proj's K without padding columns (the kernel writes the heads' columns only).
      if (kernels::MlaAbsorbSupports(quantizing) && quantized->q_stride == nh * vd) {
        Section path(*this, "- mla: W_UV's kernel quantizes for o_proj");
        uv_small = quantizing;
        quantized_out = true;
      }
    }
    if (kernels::MlaAbsorbSupports(uv_small)) {
      kernels::MlaAbsorb(uv_small, stream_);
    } else {
      Check(gemm_->Bf16(uv), "MLA W_UV projection");
    }
  }

  if (naive.path != AttentionPath::kNone) {
    // Every context row of the naive sequences, then kv [rows, nh * (nope + v)] = c W_kvb^T.
    Tensor latents(allocator(), DType::kBF16, {naive.context_rows, kv_dim});
    kernels::GatherRows({cache.data, kv_dim, naive.context_slots.ptr<int32_t>(),
                         latents.view().data, kv_dim, naive.context_rows, kv_dim,
                         kernels::ElemType::kBF16},
                        stream_);
    Tensor kv(allocator(), DType::kBF16, {naive.context_rows, nh * head_rows});
    Bf16GemmArgs up;
    up.trans_a = true;
    up.m = nh * head_rows;
    up.n = naive.context_rows;
    up.k = lora;
    up.a = wkvb.data;
    up.lda = wkvb.strides[0];
    up.b = latents.view().data;
    up.ldb = kv_dim;
    up.d = kv.view().data;
    up.ldd = nh * head_rows;
    {
      Section part(*this, "- mla: K/V up-projection");
      Check(gemm_->Bf16(up), "MLA K/V up-projection");
    }
    if (naive.path == AttentionPath::kPrefillTensorCores) {
      Section part(*this, "- mla: naive attention (flash kernel or GEMMs)");
      MlaPrefillOnTensorCores(q, kv, latents, naive, p, out);
      return quantized_out;
    }
    Section part(*this, "- mla: naive attention (kernel)");

    a.q_a = q.data;
    a.q_a_token_stride = q.strides[0];
    a.q_a_head_stride = q.strides[1];
    a.da = static_cast<int32_t>(nope);
    a.dv = static_cast<int32_t>(vd);
    a.tokens = naive.tokens;
    a.token_rows = naive.token_rows.ptr<int32_t>();
    a.sequences = static_cast<const kernels::MlaSequence*>(naive.sequences.view().data);
    a.dense_kv = kv.view().data;
    a.dense_row_stride = nh * head_rows;
    a.dense_head_stride = head_rows;
    a.dense_v_offset = static_cast<int32_t>(nope);
    a.out = out.data;
    a.out_token_stride = out.strides[0];
    a.out_head_stride = vd;
    kernels::MlaAttention(a, stream_);
  }
  return quantized_out;
}

}  // namespace dsv3
