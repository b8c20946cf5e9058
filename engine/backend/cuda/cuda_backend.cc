#include "engine/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <new>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/pinned_host_allocator.h"
#include "engine/backend/cuda/stream_allocator.h"
#include "engine/backend/graph_policy.h"
#include "engine/weights/checkpoint.h"
#include "kernels/elementwise.cuh"
#include "kernels/launch_check.h"
#include "kernels/programmatic_launch.h"
#include "kernels/weight_layout.cuh"

namespace dsv3 {

namespace {

using kernels::ElemType;

// An FP8 weight's K as cuBLASLt gets it: whole 128-blocks, and a multiple of 4 blocks, because
// the 128x128 block scales are read in rows of 16 bytes (cuBLASLt returns garbage for a K of 1
// or 2 blocks; every DeepSeek-V3 K is already a multiple of 512).
int64_t Fp8PaddedK(int64_t k) { return RoundUp(ScaleBlocks(k), 4) * kFp8ScaleBlock; }

// The types the row kernels read and write activations in.
[[maybe_unused]] bool IsActivationType(DType t) { return t == DType::kBF16 || t == DType::kF32; }

}  // namespace

int CudaBackend::DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(const Options& options) {
  if (DeviceCount() <= options.device) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", options.device, " not present (", DeviceCount(), " found)"));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->options_ = options;
  if (cudaSetDevice(options.device) != cudaSuccess ||
      cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking) != cudaSuccess) {
    return absl::InternalError(absl::StrCat("CUDA init: ", cudaGetErrorString(cudaGetLastError())));
  }
  cudaDeviceGetAttribute(&b->multiprocessors_, cudaDevAttrMultiProcessorCount, options.device);
  // The baseline of --gpu-memory-utilization: what other processes (and this context) hold.
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
    b->free_at_start_ = static_cast<int64_t>(free_bytes);
  }
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, options.device) == cudaSuccess) {
    uint64_t keep_all = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all);
  }
  CudaBackend* self = b.get();
  b->allocator_ = std::make_unique<StreamAllocator>(b->stream_, [self](void* p) {
    // First, since freeing a derived copy below comes back here for the copy.
    if (auto it = self->weight_tensors_.find(p); it != self->weight_tensors_.end()) {
      self->weight_bytes_ -= it->second;
      self->weight_tensors_.erase(it);
    }
    for (auto* cache : {&self->dequantized_, &self->grouped_weights_}) {
      auto it = cache->find(p);
      if (it == cache->end()) continue;
      Tensor copy = std::move(it->second);  // freed after the erase, never during it
      cache->erase(it);
    }
  });
  b->router_ticket_ = Tensor(b->allocator_.get(), DType::kI32, {1});
  DSV3_CUDA_CHECK(cudaMemsetAsync(b->router_ticket_.view().data, 0, sizeof(int32_t), b->stream_));
  auto gemm = CublasLtGemm::Create(b->stream_);
  if (!gemm.ok()) return gemm.status();
  b->gemm_ = *std::move(gemm);
  return b;
}

CudaBackend::~CudaBackend() {
  if (stream_ == nullptr) return;
  cudaStreamSynchronize(stream_);
  graphs_.reset();
  plan_ = StepPlan();
  graph_workspace_arena_.reset();
  graph_workspace_ = Tensor();
  inv_freq_.clear();
  { auto copies = std::move(dequantized_); dequantized_.clear(); }
  { auto tables = std::move(grouped_weights_); grouped_weights_.clear(); }
  active_log_ = Tensor();
  router_ticket_ = Tensor();
  gemm_.reset();
  cudaStreamSynchronize(stream_);
  cudaStreamDestroy(stream_);
}

void CudaBackend::Check(const absl::Status& status, const char* what) {
  if (status.ok()) return;
  std::fprintf(stderr, "CUDA backend %s: %s\n", what, std::string(status.message()).c_str());
  std::abort();
}

void CudaBackend::CountAsWeight(const Tensor& t) {
  const int64_t bytes = t.view().nbytes();
  weight_tensors_[t.view().data] = bytes;
  weight_bytes_ += bytes;
}

Tensor CudaBackend::UploadBytes(const void* host, DType dtype,
                                std::initializer_list<int64_t> shape) {
  NoteHostWork("an upload from pageable memory");
  Tensor t(allocator(), dtype, shape);
  if (t.view().nbytes() > 0) {
    DSV3_CUDA_CHECK(cudaMemcpyAsync(t.view().data, host, t.view().nbytes(),
                                    cudaMemcpyHostToDevice, stream_));
  }
  return t;
}

// ---- Weights ---------------------------------------------------------------------------------

Allocator* CudaBackend::staging_allocator() { return PinnedHostAllocator(); }

absl::StatusOr<LinearWeight> CudaBackend::MakeLinear(const TensorView& weight,
                                                     const TensorView& scale_inv,
                                                     std::vector<Tensor>& storage) {
  if (weight.ndim != 2 || !weight.is_contiguous() || weight.device != Device::kCpu) {
    return absl::InvalidArgumentError("MakeLinear: weight must be a contiguous 2-D host tensor");
  }
  const int64_t n = weight.dim(0), k = weight.dim(1);
  if (weight.dtype == DType::kF8E4M3) {
    const int64_t blocks = ScaleBlocks(n) * ScaleBlocks(k);
    if (scale_inv.empty() || scale_inv.dtype != DType::kF32 || scale_inv.numel() != blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MakeLinear: FP8 weight [", n, ", ", k, "] needs ", blocks, " F32 block scales"));
    }
    return UploadFp8Linear(weight.ptr<uint8_t>(), k, n, k, scale_inv.ptr<float>(), ScaleBlocks(k),
                           storage);
  }
  std::vector<uint16_t> bf16;
  const void* src = weight.data;
  if (weight.dtype == DType::kF32) {
    bf16.resize(n * k);
    for (int64_t i = 0; i < n * k; ++i) bf16[i] = F32ToBf16(weight.ptr<float>()[i]);
    src = bf16.data();
  } else if (weight.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("MakeLinear: weight must be F8_E4M3, BF16 or F32");
  }
  LinearWeight w;
  Tensor t = UploadBytes(src, DType::kBF16, {n, k});
  // The host buffer may die now: wait for the copy out of it.
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
  CountAsWeight(t);
  w.weight = t.view();
  storage.push_back(std::move(t));
  return w;
}

LinearWeight CudaBackend::UploadFp8Linear(const uint8_t* weight, int64_t weight_pitch, int64_t n,
                                          int64_t k, const float* scales, int64_t scale_pitch,
                                          std::vector<Tensor>& storage) {
  // Padded to cuBLASLt's operand sizes (zeros): K by Fp8PaddedK, N to 64 rows; the scales'
  // rows to K's blocks (padding scales 1).
  const int64_t n_pad = kernels::WeightRowsPadded(n), k_pad = Fp8PaddedK(k);
  const int64_t nb = ScaleBlocks(n), kb = ScaleBlocks(k), kb_pad = k_pad / kFp8ScaleBlock;
  Tensor t(allocator(), DType::kF8E4M3, {n_pad, k_pad});
  DSV3_CUDA_CHECK(cudaMemsetAsync(t.view().data, 0, n_pad * k_pad, stream_));
  DSV3_CUDA_CHECK(cudaMemcpy2DAsync(t.view().data, k_pad, weight, weight_pitch, k, n,
                                    cudaMemcpyHostToDevice, stream_));
  std::vector<float> padded(nb * kb_pad, 1.0f);
  for (int64_t r = 0; r < nb; ++r) {
    std::memcpy(&padded[r * kb_pad], scales + r * scale_pitch, kb * sizeof(float));
  }
  Tensor s = UploadBytes(padded.data(), DType::kF32, {nb, kb_pad});
  // `padded` (and the caller's host memory) may die now: wait for the copies out of them.
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
  LinearWeight w;
  w.weight = t.view();
  w.weight.shape = {n, k, 0, 0};
  w.weight.strides = {k_pad, 1, 0, 0};
  w.scale_inv = s.view();
  w.scale_inv.shape = {nb, kb, 0, 0};
  CountAsWeight(t);
  CountAsWeight(s);
  storage.push_back(std::move(t));
  storage.push_back(std::move(s));
  return w;
}

absl::StatusOr<LinearWeight> CudaBackend::LoadLinear(const TensorSource& ckpt,
                                                     const std::string& prefix, int64_t n,
                                                     int64_t k, const Slice2D& slice,
                                                     std::vector<Tensor>& storage) {
  const int64_t row_end = slice.row_end < 0 ? n : slice.row_end;
  const int64_t col_end = slice.col_end < 0 ? k : slice.col_end;
  const int64_t rows = row_end - slice.row_begin, cols = col_end - slice.col_begin;
  auto raw = ckpt.Get(prefix + ".weight");
  if (!raw.ok()) return raw.status();
  // An FP8 slice keeps its checkpoint blocks: rows [r0, r1) use scale rows [r0/128,
  // ceil(r1/128)). That needs the slice to start on a block boundary (tensor-parallel slices of
  // V3's weights all do). A slice that cuts blocks cannot keep the recipe: its activation
  // blocks along K would differ from one GPU's, and a BF16 fallback drops the activation
  // quantization, so TP=N would compute another model (by FP8's noise). Refused, as vLLM does.
  if (raw->dtype == DType::kF8E4M3 && (slice.row_begin % 128 != 0 || slice.col_begin % 128 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, ": the tensor-parallel slice rows [", slice.row_begin, ", ", row_end, ") cols [",
        slice.col_begin, ", ", col_end, ") of the FP8 weight [", n, ", ", k,
        "] cuts its 128x128 scale blocks; on the GPU, block-scaled FP8 needs every rank's slice "
        "to start on a multiple of 128 (choose a tensor-parallel size that splits the weights "
        "into whole blocks, or use a BF16 checkpoint)"));
  }
  if (raw->dtype == DType::kF8E4M3) {
    const int64_t shape[] = {n, k};
    const int64_t scale_shape[] = {ScaleBlocks(n), ScaleBlocks(k)};
    auto w = ckpt.Get(prefix + ".weight", shape, {DType::kF8E4M3});
    if (!w.ok()) return w.status();
    auto s = ckpt.Get(prefix + ".weight_scale_inv", scale_shape, {DType::kF32});
    if (!s.ok()) return s.status();
    if (rows <= 0 || cols <= 0 || row_end > n || col_end > k) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, ": slice rows [", slice.row_begin,
                                                     ", ", row_end, ") cols [", slice.col_begin,
                                                     ", ", col_end, ") of [", n, ", ", k, "]"));
    }
    const uint8_t* first = w->ptr<uint8_t>() + slice.row_begin * k + slice.col_begin;
    const float* first_scale =
        s->ptr<float>() + (slice.row_begin / 128) * scale_shape[1] + slice.col_begin / 128;
    return UploadFp8Linear(first, k, rows, cols, first_scale, scale_shape[1], storage);
  }
  if (raw->dtype == DType::kBF16) {
    // Already the device's format: the slice's rows go up as they are (no float32 round trip,
    // which took seconds for V3's 1.85 GB embedding and head).
    const int64_t shape[] = {n, k};
    auto w = ckpt.Get(prefix + ".weight", shape, {DType::kBF16});
    if (!w.ok()) return w.status();
    if (rows <= 0 || cols <= 0 || row_end > n || col_end > k) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, ": slice rows [", slice.row_begin,
                                                     ", ", row_end, ") cols [", slice.col_begin,
                                                     ", ", col_end, ") of [", n, ", ", k, "]"));
    }
    Tensor t(allocator(), DType::kBF16, {rows, cols});
    const uint8_t* first = w->ptr<uint8_t>() + (slice.row_begin * k + slice.col_begin) * 2;
    DSV3_CUDA_CHECK(cudaMemcpy2DAsync(t.view().data, cols * 2, first, k * 2, cols * 2, rows,
                                      cudaMemcpyHostToDevice, stream_));
    DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));  // `ckpt`'s memory is reused after return
    CountAsWeight(t);
    LinearWeight lw;
    lw.weight = t.view();
    storage.push_back(std::move(t));
    return lw;
  }
  // F32 / F16 checkpoints.
  auto values = ckpt.LoadLinearF32(prefix, n, k, slice);
  if (!values.ok()) return values.status();
  return MakeLinear(TensorView::Contiguous(values->data(), DType::kF32, {rows, cols}),
                    TensorView(), storage);
}

absl::StatusOr<TensorView> CudaBackend::LoadDense(const TensorSource& ckpt, const std::string& name,
                                                  std::span<const int64_t> shape,
                                                  std::vector<Tensor>& storage) {
  auto values = ckpt.LoadF32(name, shape);
  if (!values.ok()) return values.status();
  const bool bf16 = shape.size() >= 2;
  std::vector<uint16_t> converted;
  const void* src = values->data();
  if (bf16) {
    converted.resize(values->size());
    for (size_t i = 0; i < values->size(); ++i) converted[i] = F32ToBf16((*values)[i]);
    src = converted.data();
  }
  Tensor t(allocator(), bf16 ? DType::kBF16 : DType::kF32, shape.data(),
           static_cast<int>(shape.size()));
  DSV3_CUDA_CHECK(cudaMemcpyAsync(t.view().data, src, t.view().nbytes(), cudaMemcpyHostToDevice,
                                  stream_));
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
  CountAsWeight(t);
  TensorView v = t.view();
  storage.push_back(std::move(t));
  return v;
}

Tensor CudaBackend::Upload(const TensorView& host) {
  NoteHostWork("an upload");
  assert(host.is_contiguous() && (host.dtype == DType::kF32 || host.dtype == DType::kI32));
  if (host.dtype == DType::kI32) {
    Tensor t(allocator(), DType::kI32, host.shape.data(), host.ndim);
    DSV3_CUDA_CHECK(cudaMemcpyAsync(t.view().data, host.data, host.nbytes(),
                                    cudaMemcpyHostToDevice, stream_));
    return t;
  }
  std::vector<uint16_t> bf16(host.numel());
  for (int64_t i = 0; i < host.numel(); ++i) bf16[i] = F32ToBf16(host.ptr<float>()[i]);
  Tensor t(allocator(), DType::kBF16, host.shape.data(), host.ndim);
  DSV3_CUDA_CHECK(cudaMemcpyAsync(t.view().data, bf16.data(), t.view().nbytes(),
                                  cudaMemcpyHostToDevice, stream_));
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return t;
}

void CudaBackend::Download(const TensorView& t, float* host) {
  NoteHostWork("a download");
  assert(t.is_contiguous());
  const int64_t n = t.numel();
  if (t.dtype == DType::kF32) {
    DSV3_CUDA_CHECK(cudaMemcpyAsync(host, t.data, n * 4, cudaMemcpyDeviceToHost, stream_));
  } else {
    Tensor f32(allocator(), DType::kF32, {n});
    kernels::Copy2D({t.data, n, ElemTypeOf(t.dtype), f32.view().data, n, ElemType::kF32, 1, n},
                    stream_);
    DSV3_CUDA_CHECK(cudaMemcpyAsync(host, f32.view().data, n * 4, cudaMemcpyDeviceToHost, stream_));
  }
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::CopyToHost(const TensorView& src, void* host) {
  NoteHostWork("a copy to the host");
  assert(src.is_contiguous());
  if (src.nbytes() > 0) {
    DSV3_CUDA_CHECK(
        cudaMemcpyAsync(host, src.data, src.nbytes(), cudaMemcpyDeviceToHost, stream_));
  }
  DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::CopyFromHost(const void* host, const TensorView& dst) {
  NoteHostWork("a copy from pageable memory");
  assert(dst.is_contiguous());
  // From pageable memory the call returns once `host` has been staged, so it may be reused.
  if (dst.nbytes() > 0) {
    DSV3_CUDA_CHECK(
        cudaMemcpyAsync(dst.data, host, dst.nbytes(), cudaMemcpyHostToDevice, stream_));
  }
}

// ---- Step plan and timing ----------------------------------------------------------------------

ArenaAllocator& CudaBackend::GraphWorkspace(int64_t bytes) {
  if (graph_workspace_arena_ == nullptr || graph_workspace_arena_->size() < bytes) {
    graph_workspace_arena_.reset();
    graph_workspace_ = Tensor();
    const int64_t size = std::max<int64_t>(2 * bytes, 1 << 20);
    graph_workspace_ = Tensor(allocator_.get(), DType::kU8, {size});
    graph_workspace_arena_ =
        std::make_unique<ArenaAllocator>(graph_workspace_.view().data, size, Device::kCuda);
    ++plan_epoch_;  // graphs read the old workspace
  }
  graph_workspace_arena_->Reset();
  return *graph_workspace_arena_;
}

void CudaBackend::BuildPlan(const AttentionBatch& batch) {
  plan_ = StepPlan();  // the previous plan's tensors go first (into the pool or the workspace)
  StepPlan& plan = plan_;
  plan.batch = &batch;
  plan.token_ids_host = batch.token_ids;
  plan.positions_host = batch.positions;
  const int64_t t = static_cast<int64_t>(batch.positions.size());
  const int64_t n = static_cast<int64_t>(batch.sequences.size());
  std::vector<int32_t> token_seq(t, 0), tables;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const auto& seq = batch.sequences[s];
    plan.table_offsets.push_back(static_cast<int32_t>(tables.size()));
    tables.insert(tables.end(), seq.block_table, seq.block_table + seq.num_blocks);
    for (int32_t i = 0; i < seq.num_tokens; ++i) token_seq[seq.token_begin + i] = static_cast<int32_t>(s);
  }
  if (batch.padded_context > 0) {
    // A graph step: every array in the workspace, whose layout depends only on the step's shape
    // (T, sequences, padded block tables). Ids, positions, token map, token rows: T I32 each;
    // slots T I64; sequence records n x 16 bytes; GEMM items T x 16 bytes; tables.
    const int64_t bytes = 4 * AlignedDeviceBytes(t * 4) + AlignedDeviceBytes(t * 8) +
                          AlignedDeviceBytes(n * 16) + AlignedDeviceBytes(t * 16) +
                          AlignedDeviceBytes(static_cast<int64_t>(tables.size()) * 4);
    active_arena_ = &GraphWorkspace(bytes);
  }
  plan.token_ids = UploadBytes(batch.token_ids.data(), DType::kI32,
                               {static_cast<int64_t>(batch.token_ids.size())});
  plan.positions = UploadBytes(batch.positions.data(), DType::kI32, {t});
  plan.slots = UploadBytes(batch.slot_mapping.data(), DType::kI64, {t});
  plan.token_seq = UploadBytes(token_seq.data(), DType::kI32, {t});
  plan.block_tables =
      UploadBytes(tables.data(), DType::kI32, {static_cast<int64_t>(tables.size())});
  BuildForm(batch, /*naive=*/false, plan.absorbed);
  BuildForm(batch, /*naive=*/true, plan.naive);
  active_arena_ = nullptr;
}

void CudaBackend::BeginStep(const AttentionBatch& batch) {
  // Steps may run on another thread than the one that made the backend (the engine's loop),
  // and kernel launches go to the calling thread's current device.
  DSV3_CUDA_CHECK(cudaSetDevice(options_.device));
  // PDL pays where a step is a chain of short kernels (the small-M path: ~40 kernels of a few
  // microseconds per layer at batch 1); prefill's persistent GEMMs run slower with it
  // (docs/cuda.md, "Programmatic dependent launch").
  kernels::SetProgrammaticLaunch(options_.programmatic_launch &&
                                 static_cast<int64_t>(batch.positions.size()) <=
                                     grouped_moe_max_tokens_);
  BuildPlan(batch);
}

const int32_t* CudaBackend::DeviceIndices(std::span<const int32_t> host,
                                          const std::vector<int32_t>& planned,
                                          const Tensor& planned_device, Tensor& scratch) {
  if (!planned_device.empty() && std::equal(host.begin(), host.end(), planned.begin(),
                                            planned.end())) {
    return planned_device.ptr<int32_t>();
  }
  scratch = UploadBytes(host.data(), DType::kI32, {static_cast<int64_t>(host.size())});
  return scratch.ptr<int32_t>();
}

const float* CudaBackend::DeviceInvFreq(const RopeParams& rope) {
  const int64_t half = rope.rope_dim / 2;
  auto it = inv_freq_.find(rope.inv_freq);
  if (it == inv_freq_.end() || it->second.first.size() != static_cast<size_t>(half) ||
      std::memcmp(it->second.first.data(), rope.inv_freq, half * sizeof(float)) != 0) {
    std::vector<float> copy(rope.inv_freq, rope.inv_freq + half);
    Tensor t = UploadBytes(copy.data(), DType::kF32, {half});
    it = inv_freq_.insert_or_assign(rope.inv_freq, std::make_pair(std::move(copy), std::move(t)))
             .first;
  }
  return it->second.second.ptr<float>();
}

void CudaBackend::Synchronize() { DSV3_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

// ---- Elementwise ops -------------------------------------------------------------------------

void CudaBackend::Embedding(const TensorView& table, std::span<const int32_t> ids,
                            int64_t first_row, const TensorView& out) {
  assert(table.dtype == DType::kBF16 && (out.dtype == DType::kBF16 || out.dtype == DType::kF32));
  Tensor scratch;
  const int32_t* d_ids = DeviceIndices(ids, plan_.token_ids_host, plan_.token_ids, scratch);
  kernels::Embedding({table.data, d_ids, out.data, out.strides[0],
                      static_cast<int64_t>(ids.size()), table.dim(1), first_row, table.dim(0),
                      ElemTypeOf(out.dtype)},
                     stream_);
}

kernels::RmsNormParams CudaBackend::NormParams(const TensorView& x, const TensorView* add,
                                               const TensorView& weight, float eps,
                                               const TensorView& out) {
  assert(IsActivationType(x.dtype) && IsActivationType(out.dtype) && weight.dtype == DType::kF32);
  assert(x.data != out.data || x.dtype == out.dtype);
  assert(add == nullptr || IsActivationType(add->dtype));
  return {x.data,
          x.strides[0],
          weight.ptr<float>(),
          out.data,
          out.strides[0],
          x.dim(0),
          x.dim(1),
          eps,
          ElemTypeOf(x.dtype),
          ElemTypeOf(out.dtype),
          add != nullptr ? add->data : nullptr,
          add != nullptr ? add->strides[0] : 0,
          add != nullptr ? ElemTypeOf(add->dtype) : kernels::ElemType::kF32};
}

void CudaBackend::RmsNorm(const TensorView& x, const TensorView& weight, float eps,
                          const TensorView& out) {
  kernels::RmsNorm(NormParams(x, nullptr, weight, eps, out), stream_);
}

bool CudaBackend::FusesNorms(int64_t rows) const {
  return options_.fuse_norms && (rows <= kFusedNormMaxRows || rows >= kernels::kNormManyRows);
}

void CudaBackend::AddRmsNorm(const TensorView& x, const TensorView& branch,
                             const TensorView& weight, float eps, const TensorView& out) {
  if (!FusesNorms(x.dim(0))) {
    Backend::AddRmsNorm(x, branch, weight, eps, out);
    return;
  }
  kernels::RmsNorm(NormParams(x, &branch, weight, eps, out), stream_);
}

void CudaBackend::Add(const TensorView& a, const TensorView& b, const TensorView& out) {
  kernels::Binary({a.data, a.strides[0], b.data, b.strides[0], out.data, out.strides[0], a.dim(0),
                   a.dim(1), kernels::BinaryKind::kAdd, ElemTypeOf(a.dtype), ElemTypeOf(b.dtype),
                   ElemTypeOf(out.dtype)},
                  stream_);
}

void CudaBackend::SiluMul(const TensorView& gate, const TensorView& up, const TensorView& out) {
  kernels::Binary({gate.data, gate.strides[0], up.data, up.strides[0], out.data, out.strides[0],
                   gate.dim(0), gate.dim(1), kernels::BinaryKind::kSiluMul,
                   ElemTypeOf(gate.dtype), ElemTypeOf(up.dtype), ElemTypeOf(out.dtype)},
                  stream_);
}

void CudaBackend::Rope(const TensorView& x, std::span<const int32_t> positions,
                       const RopeParams& rope) {
  assert(x.dtype == DType::kBF16 && x.ndim == 3);
  Tensor scratch;
  const int32_t* pos = DeviceIndices(positions, plan_.positions_host, plan_.positions, scratch);
  kernels::Rope({x.data, x.strides[0], x.strides[1], x.dim(0), x.dim(1), rope.rope_dim, pos,
                 DeviceInvFreq(rope), rope.attention_factor, rope.interleaved},
                stream_);
}

void CudaBackend::Copy(const TensorView& src, const TensorView& dst) {
  assert(src.dim(0) == dst.dim(0) && src.dim(1) == dst.dim(1));
  assert(src.strides[1] == 1 && dst.strides[1] == 1);
  kernels::Copy2D({src.data, src.strides[0], ElemTypeOf(src.dtype), dst.data, dst.strides[0],
                   ElemTypeOf(dst.dtype), src.dim(0), src.dim(1)},
                  stream_);
}

void CudaBackend::GatherRows(const TensorView& x, std::span<const int32_t> rows,
                             const TensorView& out) {
  assert(x.dtype == out.dtype && (x.dtype == DType::kBF16 || x.dtype == DType::kF32));
  Tensor d_rows = UploadBytes(rows.data(), DType::kI32, {static_cast<int64_t>(rows.size())});
  kernels::GatherRows({x.data, x.strides[0], d_rows.ptr<int32_t>(), out.data, out.strides[0],
                       static_cast<int64_t>(rows.size()), x.dim(1), ElemTypeOf(x.dtype)},
                      stream_);
}

void CudaBackend::ScatterSumRows(const TensorView& x, std::span<const int32_t> index,
                                 const TensorView& out) {
  const int64_t n = out.dim(0), r = static_cast<int64_t>(index.size());
  assert(IsActivationType(x.dtype) && IsActivationType(out.dtype) && r == x.dim(0) &&
         x.dim(1) == out.dim(1));
  if (n == 0) return;
  // lists [n + 1 + R]: begin[i] (where output row i's sources start), then the sources by
  // output row, each row's in ascending r (a counting sort of `index`).
  std::vector<int32_t> lists(n + 1 + r, 0);
  int32_t* begin = lists.data();
  for (int32_t i : index) ++begin[i + 1];
  for (int64_t i = 0; i < n; ++i) begin[i + 1] += begin[i];
  std::vector<int32_t> fill(begin, begin + n);
  for (int64_t j = 0; j < r; ++j) lists[n + 1 + fill[index[j]]++] = static_cast<int32_t>(j);
  Tensor d_lists = UploadBytes(lists.data(), DType::kI32, {n + 1 + r});
  kernels::ScatterSumRows({x.data, x.strides[0], ElemTypeOf(x.dtype), d_lists.ptr<int32_t>(),
                           d_lists.ptr<int32_t>() + n + 1, out.data, out.strides[0],
                           ElemTypeOf(out.dtype), n, out.dim(1)},
                          stream_);
}

void CudaBackend::PadRows(const TensorView& x, float fill, const TensorView& out) {
  const int64_t elem = DTypeSize(out.dtype);
  assert(x.dtype == out.dtype && x.dim(0) <= out.dim(0) && x.dim(1) == out.dim(1));
  assert(x.strides[1] == 1 && out.strides[1] == 1 && (elem == 2 || elem == 4));
  assert(out.dtype == DType::kI32 || out.dtype == DType::kBF16 || out.dtype == DType::kF32);
  kernels::PadRows({x.data, x.strides[0], out.data, out.strides[0], x.dim(0), out.dim(0),
                    out.dim(1), static_cast<int>(elem), ElementBits(out.dtype, fill)},
                   stream_);
}

void CudaBackend::SumRowBlocks(const TensorView& x, int64_t blocks, const TensorView& out) {
  const int64_t block_rows = blocks > 0 ? x.dim(0) / blocks : 0;
  assert(IsActivationType(x.dtype) && IsActivationType(out.dtype) && blocks > 0);
  assert(block_rows * blocks == x.dim(0) && out.dim(0) <= block_rows && x.dim(1) == out.dim(1));
  kernels::SumRowBlocks({x.data, x.strides[0], ElemTypeOf(x.dtype), blocks, block_rows, out.data,
                         out.strides[0], ElemTypeOf(out.dtype), out.dim(0), out.dim(1)},
                        stream_);
}

}  // namespace dsv3
