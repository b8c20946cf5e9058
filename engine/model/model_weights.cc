#include "engine/model/model_weights.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"
#include "engine/weights/parallel_reader.h"
#include "engine/weights/random_tensors.h"
#include "engine/weights/read_plan.h"
#include "engine/weights/staged_tensors.h"
#include "engine/weights/value_check.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

namespace {

// Where the weights come from: the checkpoint (Load) or the backend's generator (Random).
// A linear weight is requested by its full shape [n, k] and the slice this rank keeps.
using LinearSource = std::function<absl::StatusOr<LinearWeight>(
    const std::string& prefix, int64_t n, int64_t k, const Slice2D& slice)>;
using DenseSource = std::function<absl::StatusOr<TensorView>(const std::string& name,
                                                             std::span<const int64_t> shape)>;
// A part of a stacked weight (linear_stack.h): its slice of [n, k] goes into `stack`. Then the
// sink makes the stacked weight.
using PartSource = std::function<absl::Status(const std::string& prefix, int64_t n, int64_t k,
                                              const Slice2D& slice, LinearStack& stack)>;
using StackSink = std::function<absl::StatusOr<StackedLinear>(const LinearStack& stack)>;

Slice2D Rows(int64_t begin, int64_t end) { return {begin, end, 0, -1}; }
Slice2D Cols(int64_t begin, int64_t end) { return {0, -1, begin, end}; }

// Loads the shard of one rank (SPEC section 2 names). Column-parallel weights (q_b, kv_b, MLP
// gate/up) keep a range of output rows, row-parallel ones (o_proj, MLP down) the matching input
// columns; routed experts are split whole; the rest is replicated.
class Loader {
 public:
  Loader(LinearSource linear, PartSource part, StackSink stack, DenseSource dense,
         const ModelConfig& config, const Shard& shard)
      : linear_(std::move(linear)),
        part_(std::move(part)),
        stack_(std::move(stack)),
        dense_(std::move(dense)),
        c_(config),
        shard_(shard) {}

  absl::StatusOr<LinearWeight> Linear(const std::string& prefix, int64_t n, int64_t k,
                                      const Slice2D& slice = {}) {
    return linear_(prefix, n, k, slice);
  }
  absl::StatusOr<TensorView> Dense(const std::string& name, std::initializer_list<int64_t> shape) {
    std::vector<int64_t> s(shape);
    return dense_(name, s);
  }
  // Linears of the same input [k] (whole columns), stacked in the order given.
  struct StackPart {
    std::string prefix;
    int64_t n = 0;
    Slice2D slice;  // rows only
  };
  absl::StatusOr<StackedLinear> Stack(const std::string& name, int64_t k,
                                      const std::vector<StackPart>& parts) {
    LinearStack stack(name);
    for (const StackPart& p : parts) DSV3_RETURN_IF_ERROR(part_(p.prefix, p.n, k, p.slice, stack));
    return stack_(stack);
  }

  // A dense MLP or the shared experts: gate and up keep rows [i0, i1) of the intermediate
  // width, stacked; down the same columns.
  absl::StatusOr<MlpWeights> Mlp(const std::string& prefix, int64_t inter) {
    MlpWeights w;
    const int64_t h = c_.hidden_size;
    const Shard dense = shard_.dense();
    const int64_t i0 = dense.Begin(inter), i1 = dense.End(inter);
    DSV3_ASSIGN_OR_RETURN(w.gate_up, Stack(prefix + "gate_up_proj", h,
                                           {{prefix + "gate_proj", inter, Rows(i0, i1)},
                                            {prefix + "up_proj", inter, Rows(i0, i1)}}));
    DSV3_ASSIGN_OR_RETURN(w.down, Linear(prefix + "down_proj", h, inter, Cols(i0, i1)));
    return w;
  }

  // A routed expert, whole (the MoE kernels take gate and up as two matrices).
  absl::StatusOr<ExpertWeights> Expert(const std::string& prefix, int64_t inter) {
    ExpertWeights w;
    const int64_t h = c_.hidden_size;
    DSV3_ASSIGN_OR_RETURN(w.gate, Linear(prefix + "gate_proj", inter, h));
    DSV3_ASSIGN_OR_RETURN(w.up, Linear(prefix + "up_proj", inter, h));
    DSV3_ASSIGN_OR_RETURN(w.down, Linear(prefix + "down_proj", h, inter));
    return w;
  }

  absl::Status Attention(const std::string& p, AttentionWeights& a) {
    const int64_t h = c_.hidden_size, nh = c_.num_attention_heads, qk = c_.qk_head_dim();
    const int64_t kvh = c_.qk_nope_head_dim + c_.v_head_dim;
    const int64_t h0 = shard_.dense().Begin(nh), h1 = shard_.dense().End(nh);  // this rank's heads
    std::vector<StackPart> qkv_a;
    if (c_.q_lora_rank) qkv_a.push_back({p + "q_a_proj", *c_.q_lora_rank, {}});
    qkv_a.push_back({p + "kv_a_proj_with_mqa", c_.kv_cache_dim(), {}});
    DSV3_ASSIGN_OR_RETURN(a.qkv_a, Stack(p + "q_a_kv_a_proj", h, qkv_a));
    if (c_.q_lora_rank) {
      const int64_t r = *c_.q_lora_rank;
      DSV3_ASSIGN_OR_RETURN(a.q_a_norm, Dense(p + "q_a_layernorm.weight", {r}));
      DSV3_ASSIGN_OR_RETURN(a.q_b, Linear(p + "q_b_proj", nh * qk, r, Rows(h0 * qk, h1 * qk)));
    } else {
      DSV3_ASSIGN_OR_RETURN(a.q, Linear(p + "q_proj", nh * qk, h, Rows(h0 * qk, h1 * qk)));
    }
    DSV3_ASSIGN_OR_RETURN(a.kv_a_norm, Dense(p + "kv_a_layernorm.weight", {c_.kv_lora_rank}));
    DSV3_ASSIGN_OR_RETURN(a.kv_b, Linear(p + "kv_b_proj", nh * kvh, c_.kv_lora_rank,
                                         Rows(h0 * kvh, h1 * kvh)));
    DSV3_ASSIGN_OR_RETURN(a.o, Linear(p + "o_proj", h, nh * c_.v_head_dim,
                                      Cols(h0 * c_.v_head_dim, h1 * c_.v_head_dim)));
    return absl::OkStatus();
  }

  absl::Status Layer(int64_t i, LayerWeights& l) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const int64_t h = c_.hidden_size;
    DSV3_ASSIGN_OR_RETURN(l.input_norm, Dense(p + "input_layernorm.weight", {h}));
    DSV3_ASSIGN_OR_RETURN(l.post_attention_norm, Dense(p + "post_attention_layernorm.weight", {h}));
    DSV3_RETURN_IF_ERROR(Attention(p + "self_attn.", l.attn));
    l.is_moe = c_.is_moe_layer(i);
    if (!l.is_moe) {
      DSV3_ASSIGN_OR_RETURN(l.dense_mlp, Mlp(p + "mlp.", c_.intermediate_size));
      return absl::OkStatus();
    }
    const int64_t e = c_.n_routed_experts;
    DSV3_ASSIGN_OR_RETURN(l.moe.router, Dense(p + "mlp.gate.weight", {e, h}));
    DSV3_ASSIGN_OR_RETURN(l.moe.bias, Dense(p + "mlp.gate.e_score_correction_bias", {e}));
    for (int64_t j = shard_.Begin(e); j < shard_.End(e); ++j) {
      DSV3_ASSIGN_OR_RETURN(
          l.moe.experts.emplace_back(),
          Expert(absl::StrCat(p, "mlp.experts.", j, "."), c_.moe_intermediate_size));
    }
    DSV3_ASSIGN_OR_RETURN(l.moe.shared, Mlp(p + "mlp.shared_experts.",
                                            c_.moe_intermediate_size * c_.n_shared_experts));
    return absl::OkStatus();
  }

  // The MTP module of layer id L = num_hidden_layers.
  absl::Status Mtp(MtpWeights& m) {
    const int64_t l = c_.num_hidden_layers, h = c_.hidden_size;
    const std::string p = absl::StrCat("model.layers.", l, ".");
    DSV3_ASSIGN_OR_RETURN(m.enorm, Dense(p + "enorm.weight", {h}));
    DSV3_ASSIGN_OR_RETURN(m.hnorm, Dense(p + "hnorm.weight", {h}));
    DSV3_ASSIGN_OR_RETURN(m.eh_proj, Linear(p + "eh_proj", h, 2 * h));
    DSV3_ASSIGN_OR_RETURN(m.head_norm, Dense(p + "shared_head.norm.weight", {h}));
    return Layer(l, m.layer);
  }

 private:
  LinearSource linear_;
  PartSource part_;
  StackSink stack_;
  DenseSource dense_;
  const ModelConfig& c_;
  const Shard shard_;
};

absl::Status LoadAll(Loader& loader, const ModelConfig& config, const Shard& shard,
                     ModelWeights& w) {
  const int64_t v = config.vocab_size, h = config.hidden_size;
  w.shard = shard;
  // Vocabulary-parallel: this rank's rows of the embedding and of lm_head.
  const Slice2D vocab = Rows(shard.dense().Begin(v), shard.dense().End(v));
  DSV3_ASSIGN_OR_RETURN(const LinearWeight embed, loader.Linear("model.embed_tokens", v, h, vocab));
  w.embed = embed.weight;
  DSV3_ASSIGN_OR_RETURN(w.final_norm, loader.Dense("model.norm.weight", {h}));
  DSV3_ASSIGN_OR_RETURN(w.lm_head, loader.Linear("lm_head", v, h, vocab));
  w.layers.resize(config.num_hidden_layers);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    DSV3_RETURN_IF_ERROR(loader.Layer(i, w.layers[i]));
  }
  return absl::OkStatus();
}

// The config's layer count against the checkpoint, before anything is allocated per layer: a
// config.json that names more layers than the checkpoint holds fails naming both.
absl::Status CheckLayerCount(const Checkpoint& ckpt, const ModelConfig& config) {
  const int64_t last = config.num_hidden_layers - 1;
  const std::string name = absl::StrCat("model.layers.", last, ".input_layernorm.weight");
  if (ckpt.Has(name)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: num_hidden_layers is ", config.num_hidden_layers,
                   ", but the checkpoint has no layer ", last, " (no tensor '", name, "')"));
}

// Every MoE layer's routed experts (the MTP module's included) handed to the backend to lay out
// for its MoE ops, once all are loaded.
absl::Status PrepareRoutedExperts(Backend& backend, ModelWeights& w) {
  auto prepare = [&](LayerWeights& l) {
    return l.is_moe ? backend.PrepareRoutedExperts(l.moe.experts) : absl::OkStatus();
  };
  for (LayerWeights& l : w.layers) DSV3_RETURN_IF_ERROR(prepare(l));
  if (w.mtp.has_value()) DSV3_RETURN_IF_ERROR(prepare(w.mtp->layer));
  return absl::OkStatus();
}

// The requests LoadAll (and the MTP module, when `mtp`) makes, in its order, loading nothing.
std::vector<WeightRequest> RecordRequests(const ModelConfig& config, const Shard& shard,
                                          bool mtp) {
  std::vector<WeightRequest> requests;
  Loader recorder(
      [&](const std::string& prefix, int64_t n, int64_t k,
          const Slice2D& slice) -> absl::StatusOr<LinearWeight> {
        requests.push_back({WeightRequest::Kind::kLinear, prefix, n, k, slice, {}});
        return LinearWeight{};
      },
      [&](const std::string& prefix, int64_t n, int64_t k, const Slice2D& slice,
          LinearStack&) -> absl::Status {
        requests.push_back({WeightRequest::Kind::kLinear, prefix, n, k, slice, {}});
        return absl::OkStatus();
      },
      [](const LinearStack&) -> absl::StatusOr<StackedLinear> { return StackedLinear{}; },
      [&](const std::string& name, std::span<const int64_t> shape) -> absl::StatusOr<TensorView> {
        requests.push_back(
            {WeightRequest::Kind::kDense, name, 0, 0, {}, {shape.begin(), shape.end()}});
        return TensorView{};
      },
      config, shard);
  ModelWeights scratch;
  // Recording never fails: the sources above always succeed.
  absl::Status recorded = LoadAll(recorder, config, shard, scratch);
  if (recorded.ok() && mtp) recorded = recorder.Mtp(scratch.mtp.emplace());
  assert(recorded.ok());
  return requests;
}

// A host view of a staged read: its dtype and staged shape, contiguous. The const_cast only fits
// TensorView's untyped pointer; the staging ring is never written through it.
TensorView StagedView(const uint8_t* data, const TensorRead& read) {
  return TensorView::Contiguous(const_cast<uint8_t*>(data), read.dtype, read.shape);
}

// The stacked weight of `stack`, made on `backend` (its tensors in `storage`).
absl::StatusOr<StackedLinear> MakeStacked(Backend& backend, const LinearStack& stack,
                                          std::vector<Tensor>& storage) {
  DSV3_ASSIGN_OR_RETURN(LinearStack::Built built, stack.Build());
  StackedLinear stacked;
  DSV3_ASSIGN_OR_RETURN(stacked.weight,
                        backend.MakeLinear(built.weight.view(), built.scale_inv.view(), storage));
  stacked.parts = std::move(built.parts);
  return stacked;
}

}  // namespace

absl::Status Shard::Validate(const ModelConfig& c) const {
  if (world < 1 || rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(absl::StrCat("tensor parallel rank ", rank,
                                                   " is outside a world of ", world));
  }
  const std::pair<const char*, int64_t> divisible[] = {
      {"vocab_size", c.vocab_size},
      {"num_attention_heads", c.num_attention_heads},
      {"intermediate_size", c.intermediate_size},
      {"n_routed_experts", c.n_routed_experts},
      {"moe_intermediate_size * n_shared_experts", c.moe_intermediate_size * c.n_shared_experts}};
  for (const auto& [field, value] : divisible) {
    // Under experts_only the routed experts are the one split dimension.
    if (experts_only && std::string_view(field) != "n_routed_experts") continue;
    if (value % world != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config.json: ", field, " (", value, ") is not divisible by the ",
          experts_only ? "expert parallel size (--tp with --dp-attention) " : "tensor parallel size ",
          world));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const Checkpoint& ckpt,
                                                                const ModelConfig& config,
                                                                Backend& backend,
                                                                const Shard& shard,
                                                                const WeightLoadOptions& options) {
  DSV3_RETURN_IF_ERROR(shard.Validate(config));
  DSV3_RETURN_IF_ERROR(CheckLayerCount(ckpt, config));
  const std::string mtp_probe =
      absl::StrCat("model.layers.", config.num_hidden_layers, ".eh_proj.weight");
  const bool mtp = config.num_nextn_predict_layers > 0 && ckpt.Has(mtp_probe);
  const std::vector<WeightRequest> requests = RecordRequests(config, shard, mtp);
  DSV3_ASSIGN_OR_RETURN(const ReadPlan plan, PlanReads(ckpt, requests));

  std::vector<std::string> paths;
  for (const auto& file : ckpt.files()) paths.push_back(file->path());
  uint64_t largest_request = 0;
  for (const PlannedLoad& load : plan.loads) {
    uint64_t bytes = 0;
    for (size_t i = load.first_read; i < load.first_read + load.num_reads; ++i) {
      bytes += plan.reads[i].bytes;
    }
    largest_request = std::max(largest_request, bytes);
  }
  LoadProgress own_progress;
  LoadProgress& progress = options.progress != nullptr ? *options.progress : own_progress;
  progress.Begin(paths, plan.file_bytes);
  spdlog::info(
      "loading: rank {} of {} reads {:.3f} GB (its slices) of the {:.3f} GB of tensors it uses, "
      "from {} shards: {} reader threads, {:.0f} MB staging ring, {} I/O",
      shard.rank, shard.world, plan.bytes / 1e9, plan.stored_bytes / 1e9,
      progress.Get().shards_total, std::max(1, options.reader.threads),
      ParallelReader::RingBytes(plan.reads, largest_request, options.reader) / 1e6,
      options.reader.direct_io ? "O_DIRECT" : "buffered");
  DSV3_ASSIGN_OR_RETURN(std::unique_ptr<ParallelReader> reader,
                        ParallelReader::Start(paths, plan.reads, largest_request,
                                              backend.staging_allocator(), options.reader,
                                              &progress));

  auto w = std::make_unique<ModelWeights>();
  // The second walk asks for the requests in the recorded order: request `next` is staged
  // (its reads waited for), checked (weights must be finite; value_check.h: only when the
  // reader's scan flagged its bytes), handed to the backend and released, while the reader
  // threads fill the ring ahead of it.
  size_t next = 0;
  auto stage = [&](const std::string& name, StagedTensors& staged,
                   bool* suspect) -> absl::StatusOr<const PlannedLoad*> {
    assert(next < plan.loads.size() && requests[next].name == name);
    const PlannedLoad& load = plan.loads[next++];
    *suspect = false;
    for (size_t i = load.first_read; i < load.first_read + load.num_reads; ++i) {
      DSV3_ASSIGN_OR_RETURN(const uint8_t* data, reader->Wait(i));
      const TensorRead& read = plan.reads[i];
      staged.Add(read.name, paths[read.file], StagedView(data, read));
      *suspect = *suspect || reader->Suspect(i);
    }
    return &load;
  };
  auto release = [&](const PlannedLoad& load) {
    if (load.num_reads > 0) reader->Release(load.first_read + load.num_reads - 1);
  };
  // A linear's staged rows, their values checked when the reader's scan flagged them.
  auto stage_linear = [&](const std::string& prefix, int64_t k,
                          StagedTensors& staged) -> absl::StatusOr<const PlannedLoad*> {
    bool suspect;
    DSV3_ASSIGN_OR_RETURN(const PlannedLoad* load, stage(prefix, staged, &suspect));
    if (suspect) {
      DSV3_RETURN_IF_ERROR(CheckLinearValues(staged, prefix, load->staged_n, k, load->staged_slice,
                                             load->row_origin));
    }
    return load;
  };
  Loader loader(
      [&](const std::string& prefix, int64_t n, int64_t k,
          const Slice2D& slice) -> absl::StatusOr<LinearWeight> {
        StagedTensors staged;
        DSV3_ASSIGN_OR_RETURN(const PlannedLoad* load, stage_linear(prefix, k, staged));
        absl::StatusOr<LinearWeight> weight =
            backend.LoadLinear(staged, prefix, load->staged_n, k, load->staged_slice, w->storage);
        release(*load);
        return weight;
      },
      [&](const std::string& prefix, int64_t n, int64_t k, const Slice2D& slice,
          LinearStack& stack) -> absl::Status {
        StagedTensors staged;
        DSV3_ASSIGN_OR_RETURN(const PlannedLoad* load, stage_linear(prefix, k, staged));
        const absl::Status added =
            stack.Add(staged, prefix, load->staged_n, k, load->staged_slice.row_begin,
                      load->staged_slice.row_end);
        release(*load);
        return added;
      },
      [&](const LinearStack& stack) { return MakeStacked(backend, stack, w->storage); },
      [&](const std::string& name, std::span<const int64_t> shape) -> absl::StatusOr<TensorView> {
        StagedTensors staged;
        bool suspect;
        DSV3_ASSIGN_OR_RETURN(const PlannedLoad* load, stage(name, staged, &suspect));
        if (suspect) {
          DSV3_RETURN_IF_ERROR(CheckFiniteTensor(staged, name));
        }
        absl::StatusOr<TensorView> tensor = backend.LoadDense(staged, name, shape, w->storage);
        release(*load);
        return tensor;
      },
      config, shard);
  DSV3_RETURN_IF_ERROR(LoadAll(loader, config, shard, *w));
  if (mtp) DSV3_RETURN_IF_ERROR(loader.Mtp(w->mtp.emplace()));
  DSV3_RETURN_IF_ERROR(PrepareRoutedExperts(backend, *w));
  progress.Finish();
  return w;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Random(const ModelConfig& config,
                                                                  Backend& backend,
                                                                  uint64_t seed,
                                                                  const Shard& shard) {
  DSV3_RETURN_IF_ERROR(shard.Validate(config));
  auto w = std::make_unique<ModelWeights>();
  uint64_t next_seed = seed;
  const bool fp8 = config.quantization.has_value() && config.quantization->fp8;
  // One weight at a time, loaded as a checkpoint's would be (each made in this rank's slice
  // shape, so a rank makes only what it holds).
  RandomTensors random(backend.staging_allocator());
  // Makes linear `prefix` in this rank's slice shape ([rows, cols] into `rows` and `cols`).
  auto make_linear = [&](const std::string& prefix, int64_t n, int64_t k, const Slice2D& slice,
                         int64_t& rows, int64_t& cols) {
    rows = (slice.row_end < 0 ? n : slice.row_end) - slice.row_begin;
    cols = (slice.col_end < 0 ? k : slice.col_end) - slice.col_begin;
    // lm_head stays BF16 as in the checkpoints; scale keeps activations O(1) layer to layer.
    const bool quantized = fp8 && prefix != "lm_head" && prefix != "model.embed_tokens";
    const float scale = 1.0f / std::sqrt(static_cast<float>(cols));
    random.MakeLinear(prefix, rows, cols, quantized, scale, ++next_seed);
  };
  Loader loader(
      [&](const std::string& prefix, int64_t n, int64_t k, const Slice2D& slice) {
        int64_t rows, cols;
        make_linear(prefix, n, k, slice, rows, cols);
        return backend.LoadLinear(random, prefix, rows, cols, Slice2D{}, w->storage);
      },
      [&](const std::string& prefix, int64_t n, int64_t k, const Slice2D& slice,
          LinearStack& stack) {
        int64_t rows, cols;
        make_linear(prefix, n, k, slice, rows, cols);
        return stack.Add(random, prefix, rows, cols, 0, rows);
      },
      [&](const LinearStack& stack) { return MakeStacked(backend, stack, w->storage); },
      [&](const std::string& name, std::span<const int64_t> shape) {
        // Norm weights near 1, router and embedding small, correction bias near 0.
        const bool norm = shape.size() == 1 && name.find("bias") == std::string::npos;
        const float mean = norm ? 1.0f : 0.0f;
        const float scale = norm ? 0.1f : 0.02f;
        random.MakeDense(name, shape, mean, scale, ++next_seed);
        return backend.LoadDense(random, name, shape, w->storage);
      },
      config, shard);
  DSV3_RETURN_IF_ERROR(LoadAll(loader, config, shard, *w));
  DSV3_RETURN_IF_ERROR(PrepareRoutedExperts(backend, *w));
  return w;
}

}  // namespace dsv3
