#include "engine/model/model.h"

#include <cassert>
#include <optional>

#include "engine/model/expert_parallel_moe.h"
#include "engine/util/status_macros.h"

namespace dsv3 {

namespace {

// An activation [rows, cols] in the backend's activation type.
Tensor NewActivation(Backend& b, int64_t rows, int64_t cols) {
  return Tensor(b.allocator(), b.activation_dtype(), {rows, cols});
}

// Columns [begin, begin + width) of a row-major [rows, cols] view.
TensorView Columns(const TensorView& t, int64_t begin, int64_t width) {
  TensorView v = t;
  v.data = static_cast<char*>(t.data) + begin * DTypeSize(t.dtype);
  v.shape[1] = width;
  return v;
}

// Data-parallel attention runs the expert-parallel MoE (expert_parallel_moe.h), whose
// all-to-alls move the backend's own tensors: host memory over gloo, or device memory over NCCL
// on the backend's stream. A device backend without a stream has no such collectives.
absl::Status CheckDataParallelAttention(const Shard& shard, Backend& backend) {
  if (!shard.experts_only || backend.device() == Device::kCpu ||
      backend.device_stream() != nullptr) {
    return absl::OkStatus();
  }
  return absl::UnimplementedError("--dp-attention on the " + backend.name() +
                                  " backend: it has no device stream for the expert-parallel "
                                  "all-to-alls; use --tp without it");
}

}  // namespace

DeepseekV3Model::DeepseekV3Model(ModelConfig config, Backend& backend, Communicator& comm)
    : config_(std::move(config)), backend_(backend), comm_(comm) {}

DeepseekV3Model::~DeepseekV3Model() = default;

AttentionBatch MakeAttentionBatch(const ForwardBatch& batch, int32_t block_size) {
  AttentionBatch ab;
  ab.block_size = block_size;
  ab.positions.resize(batch.num_tokens());
  ab.slot_mapping.resize(batch.num_tokens());
  ab.token_ids = batch.token_ids;
  for (const SequenceSlice& s : batch.sequences) {
    assert(static_cast<int64_t>(s.block_table.size()) * block_size >= s.context_end());
    ab.sequences.push_back({s.token_begin, s.num_tokens, s.context_begin, s.block_table.data(),
                            static_cast<int32_t>(s.block_table.size())});
    for (int32_t i = 0; i < s.num_tokens; ++i) {
      const int32_t pos = s.context_begin + i;
      ab.positions[s.token_begin + i] = pos;
      ab.slot_mapping[s.token_begin + i] =
          static_cast<int64_t>(s.block_table[pos / block_size]) * block_size + pos % block_size;
    }
  }
  return ab;
}

absl::StatusOr<std::unique_ptr<DeepseekV3Model>> DeepseekV3Model::Load(
    const std::string& model_dir, Backend& backend) {
  return Load(model_dir, backend, SingleRankCommunicator::Instance());
}

absl::StatusOr<std::unique_ptr<DeepseekV3Model>> DeepseekV3Model::Load(
    const std::string& model_dir, Backend& backend, Communicator& comm,
    const WeightLoadOptions& options, bool dp_attention) {
  DSV3_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromModelDir(model_dir));
  const Shard shard{comm.rank(), comm.world_size(), dp_attention};
  DSV3_RETURN_IF_ERROR(CheckDataParallelAttention(shard, backend));
  std::unique_ptr<DeepseekV3Model> model(new DeepseekV3Model(std::move(config), backend, comm));
  DSV3_ASSIGN_OR_RETURN(model->checkpoint_, Checkpoint::Open(model_dir));
  DSV3_ASSIGN_OR_RETURN(model->weights_,
                        ModelWeights::Load(*model->checkpoint_, model->config_, backend, shard,
                                           options));
  model->rope_ = RopeTable::FromConfig(model->config_);
  return model;
}

absl::StatusOr<std::unique_ptr<DeepseekV3Model>> DeepseekV3Model::Random(
    const ModelConfig& config, Backend& backend, uint64_t seed, Communicator& comm,
    bool dp_attention) {
  const Shard shard{comm.rank(), comm.world_size(), dp_attention};
  DSV3_RETURN_IF_ERROR(CheckDataParallelAttention(shard, backend));
  std::unique_ptr<DeepseekV3Model> model(new DeepseekV3Model(config, backend, comm));
  DSV3_ASSIGN_OR_RETURN(model->weights_,
                        ModelWeights::Random(model->config_, backend, seed, shard));
  model->rope_ = RopeTable::FromConfig(model->config_);
  return model;
}

absl::Status DeepseekV3Model::AllReduce(const TensorView& t) {
  return weights_->shard.dense().world == 1 ? absl::OkStatus() : comm_.AllReduceSum(t);
}

bool DeepseekV3Model::dp_attention() const { return weights_->shard.experts_only; }

bool DeepseekV3Model::returns_outputs() const {
  return weights_->shard.dense().world == 1 || comm_.rank() == 0;
}

AttentionBatch DeepseekV3Model::BeginStep(const ForwardBatch& batch, const KvCache& cache,
                                          MlaMode mla_mode, int64_t padded_context) {
  AttentionBatch ab = MakeAttentionBatch(batch, cache.block_size());
  ab.mla_mode = mla_mode;
  ab.padded_context = padded_context;
  ab.kv_lora_rank = config().kv_lora_rank;
  ab.rope_dim = config().qk_rope_head_dim;
  backend_.BeginStep(ab);
  return ab;
}

absl::Status DeepseekV3Model::Forward(const ForwardBatch& batch, KvCache& cache,
                                      std::vector<float>& logits, MlaMode mla_mode,
                                      std::vector<float>* hidden) {
  const ModelConfig& c = config_;
  const AttentionBatch ab = BeginStep(batch, cache, mla_mode);
  // [R, V] on rank 0, in a buffer kept across steps: at batch 64 and a 129K vocabulary it is
  // 33 MB, and allocating it every step churns the allocator (RSS creep under load).
  const int64_t r = static_cast<int64_t>(batch.logits_rows.size());
  TensorView logits_view;
  if (returns_outputs()) {
    if (logits_scratch_.numel() < r * c.vocab_size) {
      logits_scratch_ = Tensor(backend_.allocator(), DType::kF32, {r, c.vocab_size});
    }
    logits_view = TensorView::Contiguous(logits_scratch_.view().data, DType::kF32,
                                         {r, c.vocab_size}, logits_scratch_.view().device);
  }
  Tensor hidden_out;  // [R', H]
  if (hidden != nullptr && returns_outputs()) {
    hidden_out = Tensor(backend_.allocator(), DType::kF32,
                        {static_cast<int64_t>(batch.hidden_rows.size()), c.hidden_size});
  }
  DSV3_RETURN_IF_ERROR(RunStep(batch, ab, cache, logits_view, hidden_out.view()));
  if (!returns_outputs()) {
    logits.clear();
    return absl::OkStatus();
  }
  if (hidden != nullptr) {
    hidden->resize(hidden_out.numel());
    backend_.Download(hidden_out, hidden->data());
  }
  logits.resize(r * c.vocab_size);
  backend_.Download(logits_view, logits.data());
  return absl::OkStatus();
}

absl::Status DeepseekV3Model::RunStep(const ForwardBatch& batch, const AttentionBatch& ab,
                                      KvCache& cache, const TensorView& logits,
                                      const TensorView& hidden) {
  const ModelConfig& c = config_;
  const int64_t t = batch.num_tokens(), h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  // Residual stream [T, H] in F32 on every backend: rounding it to BF16 after each of the
  // 2L additions is the largest BF16 error source (ideal BF16 rounds only linear inputs;
  // docs/quality.md).
  Tensor x(backend_.allocator(), DType::kF32, {t, h});
  // Vocabulary-parallel embedding: each rank fills the rows of its tokens, zeros elsewhere.
  backend_.Embedding(weights_->embed, batch.token_ids,
                     weights_->shard.dense().Begin(c.vocab_size), x);
  DSV3_RETURN_IF_ERROR(AllReduce(x));

  // The last layer's output [T, H], kept in F32 until the residual add (Layer).
  Tensor branch(backend_.allocator(), DType::kF32, {t, h});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    backend_.BeginLayer(l);
    DSV3_RETURN_IF_ERROR(Layer(weights_->layers[l], x, branch, /*pending=*/l > 0, ab,
                               cache.layer(l), ab.mla_mode, batch.max_rank_tokens));
  }
  if (c.num_hidden_layers > 0) backend_.Add(x, branch, x);

  backend_.BeginLayer(-1);
  if (!hidden.empty()) NormedRows(x, batch.hidden_rows, weights_->final_norm, hidden);
  const int64_t r = static_cast<int64_t>(batch.logits_rows.size());
  Tensor normed = NewActivation(backend_, r, h);  // [R, H]
  if (IsEveryRow(batch.logits_rows, t)) {
    backend_.RmsNorm(x, weights_->final_norm, eps, normed);
  } else {
    Tensor last(backend_.allocator(), DType::kF32, {r, h});  // [R, H]
    backend_.GatherRows(x, batch.logits_rows, last);
    backend_.RmsNorm(last, weights_->final_norm, eps, normed);
  }
  return Head(normed, logits);
}

absl::Status DeepseekV3Model::ForwardMtp(const ForwardBatch& batch, absl::Span<const float> hidden,
                                         KvCache& cache, std::vector<float>& logits,
                                         std::vector<float>* hidden_out) {
  const ModelConfig& c = config_;
  const int64_t t = batch.num_tokens(), h = c.hidden_size, l = c.num_hidden_layers;
  if (!weights_->mtp.has_value()) {
    return absl::FailedPreconditionError("the checkpoint has no MTP module (layer id " +
                                         std::to_string(l) + ")");
  }
  if (!cache.has_mtp_layer()) {
    return absl::FailedPreconditionError("the KV cache was allocated without the MTP layer");
  }
  assert(!returns_outputs() || static_cast<int64_t>(hidden.size()) == t * h);
  const MtpWeights& m = *weights_->mtp;
  const AttentionBatch ab = BeginStep(batch, cache);
  const float eps = static_cast<float>(c.rms_norm_eps);
  backend_.BeginLayer(l);

  // [T, H], [T, H], [T, 2H], [T, H] (u, the residual stream, in F32 as the main one)
  Tensor emb = NewActivation(backend_, t, h);
  Tensor h_prev = NewActivation(backend_, t, h);
  Tensor eh = NewActivation(backend_, t, 2 * h);
  Tensor u(backend_.allocator(), DType::kF32, {t, h});
  backend_.Embedding(weights_->embed, batch.token_ids, weights_->shard.dense().Begin(c.vocab_size), emb);
  DSV3_RETURN_IF_ERROR(AllReduce(emb));
  {
    // h_i [T, H] F32 from the host. Under tensor parallelism only rank 0 has it: the other
    // ranks zero their copy on the device and sum it with rank 0's (a broadcast by the
    // collective every rank already has), so that every rank runs the layer on the same rows.
    Tensor h_in(backend_.allocator(), DType::kF32, {t, h});
    if (returns_outputs()) {
      backend_.CopyFromHost(hidden.data(), h_in);
    } else {
      const TensorView no_rows = TensorView::Contiguous(nullptr, DType::kF32, {0, h},
                                                        backend_.device());
      backend_.PadRows(no_rows, 0.0f, h_in);
    }
    DSV3_RETURN_IF_ERROR(AllReduce(h_in));
    backend_.Copy(h_in, h_prev);  // in the activation type
  }
  // eh [T, 2H] = [RMSNorm_e(Emb(t_{i+1})) ; RMSNorm_h(h_i)], the embedding half first; then
  // eh_proj and the MTP layer.
  backend_.RmsNorm(emb, m.enorm, eps, Columns(eh, 0, h));
  backend_.RmsNorm(h_prev, m.hnorm, eps, Columns(eh, h, h));
  backend_.Linear(eh, m.eh_proj, u);
  {
    Tensor branch(backend_.allocator(), DType::kF32, {t, h});  // [T, H]
    DSV3_RETURN_IF_ERROR(Layer(m.layer, u, branch, /*pending=*/false, ab, cache.layer(l),
                               MlaMode::kAuto, batch.max_rank_tokens));
    backend_.Add(u, branch, u);
  }

  backend_.BeginLayer(-1);
  const int64_t r = static_cast<int64_t>(batch.logits_rows.size());
  Tensor last(backend_.allocator(), DType::kF32, {r, h});  // [R, H]
  backend_.GatherRows(u, batch.logits_rows, last);
  Tensor normed = NewActivation(backend_, r, h);
  backend_.RmsNorm(last, m.head_norm, eps, normed);
  if (hidden_out != nullptr && returns_outputs()) {
    // The next draft's h in F32, as the main model's hidden rows (NormedRows).
    Tensor h_out(backend_.allocator(), DType::kF32, {r, h});
    backend_.RmsNorm(last, m.head_norm, eps, h_out);
    hidden_out->resize(h_out.numel());
    backend_.Download(h_out, hidden_out->data());
  }
  Tensor device_logits;  // [R, V] on rank 0
  if (returns_outputs()) device_logits = Tensor(backend_.allocator(), DType::kF32, {r, c.vocab_size});
  DSV3_RETURN_IF_ERROR(Head(normed, device_logits.view()));
  if (!returns_outputs()) {
    logits.clear();
    return absl::OkStatus();
  }
  logits.resize(r * c.vocab_size);
  backend_.Download(device_logits, logits.data());
  return absl::OkStatus();
}

void DeepseekV3Model::NormedRows(const TensorView& x, std::span<const int32_t> rows,
                                 const TensorView& norm, const TensorView& out) {
  const float eps = static_cast<float>(config_.rms_norm_eps);
  if (IsEveryRow(rows, x.dim(0))) {
    backend_.RmsNorm(x, norm, eps, out);
    return;
  }
  Tensor picked(backend_.allocator(), DType::kF32,
                {static_cast<int64_t>(rows.size()), config_.hidden_size});  // [R, H] of x
  backend_.GatherRows(x, rows, picked);
  backend_.RmsNorm(picked, norm, eps, out);
}

absl::Status DeepseekV3Model::Head(const TensorView& normed, const TensorView& logits) {
  const ModelConfig& c = config_;
  const int64_t rows = normed.dim(0);
  const int world = weights_->shard.dense().world;
  const int64_t v_local = c.vocab_size / world;
  if (world == 1) {
    backend_.Linear(normed, weights_->lm_head, logits);
    return absl::OkStatus();
  }
  // Vocabulary-parallel head: [R, V_local] here, gathered as [world, R, V_local], then rank w's
  // block placed at columns [w * V_local, (w + 1) * V_local) of [R, V]. Only rank 0 samples.
  Tensor local(backend_.allocator(), DType::kF32, {rows, v_local});
  backend_.Linear(normed, weights_->lm_head, local);
  Tensor gathered(backend_.allocator(), DType::kF32, {world * rows, v_local});
  DSV3_RETURN_IF_ERROR(comm_.AllGather(local, gathered));
  if (!returns_outputs()) return absl::OkStatus();
  for (int w = 0; w < world; ++w) {
    backend_.Copy(gathered.view().Rows(w * rows, (w + 1) * rows),
                  Columns(logits, w * v_local, v_local));
  }
  return absl::OkStatus();
}

absl::Status DeepseekV3Model::Layer(const LayerWeights& layer, const TensorView& x,
                                    const TensorView& branch, bool pending,
                                    const AttentionBatch& batch, const TensorView& cache,
                                    MlaMode mode, int64_t max_rank_tokens) {
  const ModelConfig& c = config_;
  const int64_t t = x.dim(0), h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Tensor normed = NewActivation(backend_, t, h);  // [T, H]
  // branch (attention or FFN output) stays F32 until the residual add rounds it once: under
  // tensor parallelism it is a partial sum, and all-reducing unrounded partials rounds TP=N
  // where TP=1 rounds (BF16 partials gave TP=2 extra roundings that these models amplify).
  // q_a and kv_a in one GEMM of the normed input: qkv_lat [T, stacked rows], whose column ranges
  // are q_lat [T, q_lora] and latent [T, kv_lora + rope].
  const StackedLinear& qkv_a = layer.attn.qkv_a;
  Tensor qkv_lat = NewActivation(backend_, t, qkv_a.weight.n());
  backend_.RmsNormLinear(x, pending ? &branch : nullptr, layer.input_norm, eps, normed,
                         qkv_a.weight, qkv_lat);
  Attention(layer, normed, qkv_lat, batch, cache, mode, branch);
  DSV3_RETURN_IF_ERROR(AllReduce(branch));  // heads are split: o_proj gives partial sums
  backend_.AddRmsNorm(x, branch, layer.post_attention_norm, eps, normed);
  if (layer.is_moe) {
    DSV3_RETURN_IF_ERROR(Moe(layer.moe, normed, max_rank_tokens, branch));
  } else {
    Mlp(layer.dense_mlp, normed, branch);
  }
  return AllReduce(branch);  // experts and MLP widths are split
}

void DeepseekV3Model::Attention(const LayerWeights& layer, const TensorView& x,
                                const TensorView& qkv_lat, const AttentionBatch& batch,
                                const TensorView& cache, MlaMode mode, const TensorView& out) {
  const ModelConfig& c = config_;
  const AttentionWeights& a = layer.attn;
  // This rank's heads.
  const int64_t t = x.dim(0), nh = c.num_attention_heads / weights_->shard.dense().world;
  const int64_t qk = c.qk_head_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);

  Tensor q = NewActivation(backend_, t, nh * qk);  // [T, nh * (nope + rope)]
  // latent: c = RMSNorm(kv[:, :kv_lora]), k_pe = RoPE(kv[:, kv_lora:]), then to the cache.
  const TensorView latent = a.qkv_a.Output(qkv_lat, a.qkv_a.parts.size() - 1);
  const TensorView c_part = Columns(latent, 0, c.kv_lora_rank);
  TensorView k_pe = latent;  // [T, 1, rope]
  k_pe.data = static_cast<char*>(latent.data) + c.kv_lora_rank * DTypeSize(latent.dtype);
  k_pe.ndim = 3;
  k_pe.shape = {t, 1, c.qk_rope_head_dim, 0};
  k_pe.strides = {latent.strides[0], c.qk_rope_head_dim, 1, 0};
  TensorView q3 = q.view();  // [T, nh, nope + rope]
  q3.ndim = 3;
  q3.shape = {t, nh, qk, 0};
  q3.strides = {nh * qk, qk, 1, 0};
  TensorView q_pe = q3;  // [T, nh, rope]
  q_pe.data = static_cast<char*>(q.view().data) + c.qk_nope_head_dim * DTypeSize(q.view().dtype);
  q_pe.shape[2] = c.qk_rope_head_dim;
  const MlaInputs inputs{latent, c_part, k_pe, q_pe};
  if (a.q_b) {
    backend_.MlaQueryAndInputs({.q_lat = a.qkv_a.Output(qkv_lat, 0),
                                .q_a_norm = a.q_a_norm,
                                .q_b = &*a.q_b,
                                .q = q,
                                .inputs = inputs,
                                .kv_a_norm = a.kv_a_norm,
                                .eps = eps},
                               batch.positions, rope_.params(), batch, cache);
  } else {
    backend_.Linear(x, *a.q, q);
    backend_.PrepareMlaInputs(inputs, a.kv_a_norm, eps, batch.positions, rope_.params(), batch,
                              cache);
  }
  MlaParams params;
  params.num_heads = nh;
  params.nope_dim = c.qk_nope_head_dim;
  params.rope_dim = c.qk_rope_head_dim;
  params.v_dim = c.v_head_dim;
  params.kv_lora_rank = c.kv_lora_rank;
  params.softmax_scale = static_cast<float>(c.softmax_scale());
  params.mode = mode;
  Tensor attn = NewActivation(backend_, t, nh * c.v_head_dim);  // [T, nh * v]
  backend_.MlaAttentionLinear(q3, cache, a.kv_b, batch, params, attn, a.o, out);
}

void DeepseekV3Model::Mlp(const MlpWeights& w, const TensorView& x, const TensorView& out,
                          bool add_to_out) {
  // gate and up in one GEMM: gate_up [T, stacked rows], columns gate [T, I] and up [T, I].
  Tensor gate_up = NewActivation(backend_, x.dim(0), w.gate_up.weight.n());
  backend_.Linear(x, w.gate_up.weight, gate_up);
  const TensorView gate = w.gate_up.Output(gate_up, 0);
  backend_.SiluMul(gate, w.gate_up.Output(gate_up, 1), gate);
  if (add_to_out) {
    backend_.LinearAdd(gate, w.down, out);
  } else {
    backend_.Linear(gate, w.down, out);
  }
}

absl::Status DeepseekV3Model::Moe(const MoeWeights& w, const TensorView& x, int64_t max_rank_tokens,
                                  const TensorView& out) {
  const ModelConfig& c = config_;
  const int64_t t = x.dim(0), k = c.num_experts_per_tok;
  Tensor ids(backend_.allocator(), DType::kI32, {t, k});      // [T, k]
  Tensor weights(backend_.allocator(), DType::kF32, {t, k});  // [T, k]
  MoeRouteParams route;
  route.num_experts = c.n_routed_experts;
  route.top_k = k;
  route.num_groups = c.n_group;
  route.topk_groups = c.topk_group;
  route.norm_topk_prob = c.norm_topk_prob;
  route.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  backend_.MoeRoute(x, w.router, w.bias, route, ids, weights);
  const int64_t expert_begin = weights_->shard.Begin(c.n_routed_experts);
  if (dp_attention()) {
    DSV3_RETURN_IF_ERROR(ExpertParallelMoe(
        backend_, comm_,
        {.x = x,
         .topk_ids = ids,
         .topk_weights = weights,
         .experts = w.experts,
         .expert_begin = expert_begin,
         .num_experts = c.n_routed_experts,
         .layout = ChooseDispatchLayout(max_rank_tokens),
         .capacity = max_rank_tokens},
        out));
  } else {
    // The shared expert as one more expert of the routed pass where the backend can (SGLang's
    // shared-experts fusion): its gate and up are the parts of its stacked gate|up weight.
    const std::optional<LinearWeight> gate = w.shared.gate_up.Weight(0);
    const std::optional<LinearWeight> up = w.shared.gate_up.Weight(1);
    if (gate && up &&
        backend_.MoeExpertsWithShared(x, ids, weights, w.experts, expert_begin,
                                      {*gate, *up, w.shared.down}, out)) {
      return absl::OkStatus();
    }
    backend_.MoeExperts(x, ids, weights, w.experts, expert_begin, out);
  }
  Mlp(w.shared, x, out, /*add_to_out=*/true);  // the shared expert's output onto the routed sum
  return absl::OkStatus();
}

}  // namespace dsv3
