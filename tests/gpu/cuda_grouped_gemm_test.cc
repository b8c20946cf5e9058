// The small-M FP8 tensor-core GEMM (kernels/moe_grouped.cu) through the backend ops that use it:
// FP8 linears of at most 16 rows (CudaBackend::Linear's dense path) and the grouped MoE experts
// (decode-sized batches), against the CPU backend emulating the GPU's numerics (FP8 activation
// quantization, BF16 activations; only summation order and output rounding differ, ~1e-2) and
// against the plain F32 CPU (FP8 activations, ~6e-2). GPU outputs are poisoned (NaN) first.
// Shapes cover ragged N (not a multiple of the kernel's 16-column tiles) and K, every K split the
// launch picks (1 to 16 warps per column tile), token tiles past the last row, experts with no
// rows and experts of many 8-row chunks. At the kernel: MoeAlign's chunks, and a grouped launch
// over them gives the bits of the launch whose blocks go through every chunk of their expert.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/gpu_emulation_backend.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/moe_grouped.cuh"
#include "tests/gpu/gpu_test_util.h"
#include "tests/moe_routing_util.h"

namespace dsv3 {
namespace {

using testing::CopyIn;
using testing::CopyOut;
using testing::Fp8Weight;
using testing::Poison;
using testing::RandomBf16;
using testing::RandomFp8;
using testing::RandomRouting;
using testing::RelError;
using testing::ToHost;

constexpr double kEmulatedTol = 1e-2;
constexpr double kFp8ActTol = 6e-2;

class CudaGroupedGemmTest : public testing::GpuTest {
 protected:
  // One FP8 linear [n, k] on the plain CPU, the emulating CPU and the GPU.
  struct Linears {
    LinearWeight cpu, emu, gpu;
  };
  // gpu_copy: a second GPU copy of the same weight.
  Linears MakeLinears(int64_t n, int64_t k, LinearWeight* gpu_copy = nullptr) {
    Fp8Weight w = RandomFp8(n, k, rng_);
    auto c = cpu_.MakeLinear(w.weight(), w.scale_inv(), cpu_store_);
    auto e = emu_.MakeLinear(w.weight(), w.scale_inv(), cpu_store_);
    auto g = gpu_->MakeLinear(w.weight(), w.scale_inv(), gpu_store_);
    EXPECT_TRUE(c.ok() && e.ok() && g.ok());
    if (gpu_copy != nullptr) {
      auto copy = gpu_->MakeLinear(w.weight(), w.scale_inv(), gpu_store_);
      EXPECT_TRUE(copy.ok());
      *gpu_copy = *copy;
    }
    return {*c, *e, *g};
  }

  CpuBackend cpu_{0};  // every core: the references dominate this test's time
  GpuEmulationBackend emu_{0, GpuEmulation{.fp8_activations = true, .bf16_activations = true}};
  std::vector<Tensor> cpu_store_, gpu_store_;
  std::mt19937 rng_{2024};
};

// Every row count up to the dense path's limit that matters for the token tiles (1, a partial
// tile, exactly one, one past, two), on ragged and DeepSeek-V3 shapes: K = 7168 splits K over 16
// warps per column tile (unevenly: 28 pairs of k-blocks), N = 7168 with K = 2048 over 8, K <= 512
// over 2.
TEST_F(CudaGroupedGemmTest, SmallRowFp8LinearMatchesEmulatedCpu) {
  const std::pair<int64_t, int64_t> shapes[] = {{200, 300}, {2048, 7168}, {576, 7168},
                                                {7168, 2048}, {8, 100},     {200, 7168}};
  for (auto [n, k] : shapes) {
    const Linears w = MakeLinears(n, k);
    for (int64_t m : {1, 3, 5, 8, 9, 16}) {
      auto x = RandomBf16(m * k, rng_, 2.0f);
      std::vector<float> want(m * n), emulated(m * n);
      cpu_.Linear(Host(x, m, k), w.cpu, Host(want, m, n));
      emu_.Linear(Host(x, m, k), w.emu, Host(emulated, m, n));
      Tensor gx = Dev(x, m, k), gy = DevEmpty(DType::kBF16, m, n);
      gpu_->Linear(gx, w.gpu, gy);
      const auto got = ToHost(*gpu_, gy);
      std::printf("dense fp8 M=%ld N=%ld K=%ld: gpu-emu %.2e gpu-cpu %.2e\n", m, n, k,
                  RelError(got, emulated), RelError(got, want));
      EXPECT_LT(RelError(got, emulated), kEmulatedTol) << "M=" << m << " N=" << n << " K=" << k;
      EXPECT_LT(RelError(got, want), kFp8ActTol) << "M=" << m << " N=" << n << " K=" << k;
    }
  }
}

// F32 outputs (as the model's logits and router paths use) into a column window of a wider
// tensor: the kernel honours y's row stride and writes nothing outside [M, N].
TEST_F(CudaGroupedGemmTest, SmallRowFp8LinearWritesF32IntoStridedWindowOnly) {
  const int64_t n = 200, k = 300, width = n + 40, offset = 24;
  const Linears w = MakeLinears(n, k);
  for (int64_t m : {1, 9, 16}) {
    auto x = RandomBf16(m * k, rng_, 2.0f);
    std::vector<float> emulated(m * n);
    emu_.Linear(Host(x, m, k), w.emu, Host(emulated, m, n));
    Tensor gx = Dev(x, m, k), wide = DevEmpty(DType::kF32, m, width);
    TensorView gy = wide.view();
    gy.data = static_cast<float*>(gy.data) + offset;
    gy.shape[1] = n;
    gpu_->Linear(gx, w.gpu, gy);
    const auto all = ToHost(*gpu_, wide);
    std::vector<float> got(m * n);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < width; ++c) {
        const float v = all[r * width + c];
        if (c >= offset && c < offset + n) {
          got[r * n + c - offset] = v;
        } else {
          EXPECT_TRUE(std::isnan(v)) << "written outside y: row " << r << " column " << c;
        }
      }
    }
    EXPECT_LT(RelError(got, emulated), kEmulatedTol) << "M=" << m;
  }
}

// Routing tables [T, top_k] of global expert ids.
using Routing = std::vector<int32_t>;

// GroupedFp8Gemm without chunks runs each expert's rows 8 at a time in the same blocks; given
// MoeAlign's chunks (checked here against the routing), each chunk of 8 rows runs as blocks of
// its own: the same K split, k-blocks in the same order and the same arithmetic, so the same F32
// bits, and every row written. 16 experts of gate|up (N = 300, K = 1000: K split over up to 4
// warps), top 4, at 1 to 100 tokens (at 100, ~25 rows an expert: three or four chunks, the last
// one partial).
TEST_F(CudaGroupedGemmTest, GroupedGemmChunksGiveOneBlockPerExpertBits) {
  const int64_t experts = 16, top_k = 4, mats = 2, n = 300, k = 1000;
  std::vector<kernels::GroupedWeight> table;  // [experts, mats]
  int64_t k_pad = 0, scale_stride = 0;
  for (int64_t i = 0; i < experts * mats; ++i) {
    Fp8Weight w = RandomFp8(n, k, rng_);
    auto g = gpu_->MakeLinear(w.weight(), w.scale_inv(), gpu_store_);
    ASSERT_TRUE(g.ok()) << g.status();
    table.push_back({g->weight.ptr<uint8_t>(), g->scale_inv.ptr<float>()});
    k_pad = g->weight.strides[0];
    scale_stride = g->scale_inv.strides[0];
  }
  Allocator* alloc = gpu_->allocator();
  Tensor d_table(alloc, DType::kU8, {static_cast<int64_t>(table.size() * sizeof(table[0]))});
  CopyIn(*gpu_, d_table, table.data());
  for (int64_t t : {1, 5, 8, 20, 40, 100}) {
    const int64_t entries = t * top_k, rows_pad = (entries + 3) / 4 * 4;
    const int64_t max_chunks = kernels::MaxGroupedChunks(entries, experts);
    const Routing ids = RandomRouting(t, top_k, experts, rng_);
    Tensor d_ids(alloc, DType::kI32, {entries}), begin(alloc, DType::kI32, {experts + 1});
    Tensor active(alloc, DType::kI32, {experts}), num_active(alloc, DType::kI32, {1});
    Tensor token_of(alloc, DType::kI32, {entries}), row_of(alloc, DType::kI32, {entries});
    Tensor chunk_begin(alloc, DType::kI32, {experts + 1}), num_chunks(alloc, DType::kI32, {1});
    Tensor chunk_expert(alloc, DType::kI32, {max_chunks});
    CopyIn(*gpu_, d_ids, ids.data());
    kernels::MoeAlignParams align{d_ids.ptr<int32_t>(),    entries,
                                  top_k,                   0,
                                  experts,                 begin.ptr<int32_t>(),
                                  active.ptr<int32_t>(),   num_active.ptr<int32_t>(),
                                  token_of.ptr<int32_t>(), row_of.ptr<int32_t>(),
                                  nullptr};
    align.chunks = {chunk_begin.ptr<int32_t>(), chunk_expert.ptr<int32_t>(),
                    num_chunks.ptr<int32_t>(), max_chunks};
    kernels::MoeAlign(align, gpu_->stream());
    // The chunks against the routing: ceil(rows / 8) per expert, numbered expert by expert.
    std::vector<int32_t> host_begin(experts + 1), host_chunk_begin(experts + 1), host_count(1);
    CopyOut(*gpu_, begin, host_begin.data());
    CopyOut(*gpu_, chunk_begin, host_chunk_begin.data());
    CopyOut(*gpu_, num_chunks, host_count.data());
    std::vector<int32_t> rows_of(experts, 0);
    for (int32_t id : ids) ++rows_of[id];
    int32_t chunks = 0;
    for (int64_t e = 0; e < experts; ++e) {
      EXPECT_EQ(host_begin[e + 1] - host_begin[e], rows_of[e]) << "t=" << t << " expert " << e;
      EXPECT_EQ(host_chunk_begin[e], chunks) << "t=" << t << " expert " << e;
      chunks += (rows_of[e] + 7) / 8;
    }
    EXPECT_EQ(host_chunk_begin[experts], chunks) << "t=" << t;
    EXPECT_EQ(host_count[0], chunks) << "t=" << t;
    EXPECT_LE(chunks, max_chunks) << "t=" << t;
    // Quantized activations: xq [rows_pad, k_pad] finite e4m3, xs [k_pad / 128, rows_pad].
    Fp8Weight x = RandomFp8(rows_pad, k_pad, rng_);
    std::vector<float> scales(k_pad / 128 * rows_pad);
    std::uniform_real_distribution<float> u(0.5e-2f, 1.5e-2f);
    for (float& v : scales) v = u(rng_);
    Tensor xq(alloc, DType::kF8E4M3, {rows_pad, k_pad}),
        xs(alloc, DType::kF32, {k_pad / 128, rows_pad});
    CopyIn(*gpu_, xq, x.q.data());
    CopyIn(*gpu_, xs, scales.data());
    std::vector<uint32_t> bits[2];  // [without, with chunks] y [entries, mats * n] F32
    for (int form = 0; form < 2; ++form) {
      Tensor y = DevEmpty(DType::kF32, entries, mats * n);
      kernels::GroupedFp8GemmParams p{xq.ptr<uint8_t>(),
                                      xs.ptr<float>(),
                                      rows_pad,
                                      k_pad,
                                      begin.ptr<int32_t>(),
                                      active.ptr<int32_t>(),
                                      num_active.ptr<int32_t>(),
                                      std::min(experts, entries),
                                      d_table.ptr<kernels::GroupedWeight>(),
                                      mats,
                                      0,
                                      mats,
                                      n,
                                      scale_stride,
                                      y.view().data,
                                      mats * n,
                                      true};
      p.max_rows_per_group = t;
      if (form == 1) p.chunks = align.chunks;
      kernels::GroupedFp8Gemm(p, gpu_->stream());
      bits[form].resize(entries * mats * n);
      CopyOut(*gpu_, y, bits[form].data());
    }
    for (int form = 0; form < 2; ++form) {
      int64_t differ = 0, unwritten = 0;
      for (size_t i = 0; i < bits[0].size(); ++i) {
        differ += bits[form][i] != bits[0][i] ? 1 : 0;
        unwritten += bits[form][i] == 0xffffffffu ? 1 : 0;
      }
      EXPECT_EQ(differ, 0) << "t=" << t << " chunks " << form;
      EXPECT_EQ(unwritten, 0) << "t=" << t << " chunks " << form;
    }
  }
}

// A dense launch of at most 8 rows feeds its weights through the shared-memory ring; one of 9
// to 16 rows loads pairs of k-blocks into registers. The same inputs' first rows must come out
// with the same F32 bits either way (the K split depends on the shape only), on a shape whose
// blocks have 8 warps (K split 8) and one whose blocks have 16 (K split 16).
TEST_F(CudaGroupedGemmTest, DenseGemmRingFormGivesPairFormBits) {
  struct Shape {
    int64_t n, k;
  };
  for (const Shape sh : {Shape{300, 2000}, Shape{512, 4096}}) {
    Fp8Weight w = RandomFp8(sh.n, sh.k, rng_);
    auto g = gpu_->MakeLinear(w.weight(), w.scale_inv(), gpu_store_);
    ASSERT_TRUE(g.ok()) << g.status();
    const int64_t k_pad = g->weight.strides[0], rows_pad = 16;
    Fp8Weight x = RandomFp8(rows_pad, k_pad, rng_);
    std::vector<float> scales(k_pad / 128 * rows_pad);
    std::uniform_real_distribution<float> u(0.5e-2f, 1.5e-2f);
    for (float& v : scales) v = u(rng_);
    Allocator* alloc = gpu_->allocator();
    Tensor xq(alloc, DType::kF8E4M3, {rows_pad, k_pad}),
        xs(alloc, DType::kF32, {k_pad / 128, rows_pad});
    CopyIn(*gpu_, xq, x.q.data());
    CopyIn(*gpu_, xs, scales.data());
    auto run = [&](int64_t rows) {
      Tensor y = DevEmpty(DType::kF32, rows, sh.n);
      kernels::DenseFp8Gemm({xq.ptr<uint8_t>(), xs.ptr<float>(), rows, rows_pad, k_pad,
                             {g->weight.ptr<uint8_t>(), g->scale_inv.ptr<float>()}, sh.n,
                             g->scale_inv.strides[0], y.view().data, sh.n, true},
                            gpu_->stream());
      std::vector<uint32_t> bits(rows * sh.n);
      CopyOut(*gpu_, y, bits.data());
      return bits;
    };
    const std::vector<uint32_t> pairs = run(16);
    for (int64_t rows : {1, 5, 8}) {
      const std::vector<uint32_t> ring = run(rows);
      int64_t differ = 0, unwritten = 0;
      for (size_t i = 0; i < ring.size(); ++i) {
        differ += ring[i] != pairs[i] ? 1 : 0;
        unwritten += ring[i] == 0xffffffffu ? 1 : 0;
      }
      EXPECT_EQ(differ, 0) << "n=" << sh.n << " k=" << sh.k << " rows=" << rows;
      EXPECT_EQ(unwritten, 0) << "n=" << sh.n << " k=" << sh.k << " rows=" << rows;
    }
  }
}

class CudaGroupedMoeTest : public CudaGroupedGemmTest {
 protected:
  // `experts` experts of hidden size h and intermediate size inter, on all three backends (the
  // GPU's as loading leaves them, row-major: the MoE kernels read either layout), and the same
  // GPU experts again as PrepareRoutedExperts lays them out (k-block-major).
  void MakeExperts(int64_t experts, int64_t h, int64_t inter) {
    h_ = h;
    cw_.assign(experts, {});
    ew_.assign(experts, {});
    gw_.assign(experts, {});
    gkb_.assign(experts, {});
    for (int64_t j = 0; j < experts; ++j) {
      for (auto [field, n, k] : {std::tuple{&ExpertWeights::gate, inter, h},
                                 std::tuple{&ExpertWeights::up, inter, h},
                                 std::tuple{&ExpertWeights::down, h, inter}}) {
        const Linears w = MakeLinears(n, k, &(gkb_[j].*field));
        cw_[j].*field = w.cpu;
        ew_[j].*field = w.emu;
        gw_[j].*field = w.gpu;
      }
    }
    ASSERT_TRUE(gpu_->PrepareRoutedExperts(gkb_).ok());
    for (const ExpertWeights& e : gkb_) ASSERT_TRUE(e.gate.k_block_major && e.down.k_block_major);
  }

  // The GPU's MoE output for x routed by `ids` with `weights` [T, top_k] through the local
  // experts `experts`, the first one global expert `begin` (or, given `shared`, through
  // MoeExpertsWithShared: false when it did not take the step), as host floats.
  std::vector<float> GpuMoe(const std::vector<float>& x, const Routing& ids, int64_t top_k,
                            const std::vector<float>& weights,
                            std::span<const ExpertWeights> experts, int64_t begin = 0,
                            const ExpertWeights* shared = nullptr) {
    const int64_t t = static_cast<int64_t>(ids.size()) / top_k, h = h_;
    Tensor gx = Dev(x, t, h), out = DevEmpty(DType::kBF16, t, h);
    Tensor gids(gpu_->allocator(), DType::kI32, {t, top_k});
    Tensor gweights(gpu_->allocator(), DType::kF32, {t, top_k});
    CopyIn(*gpu_, gids, ids.data());
    CopyIn(*gpu_, gweights, weights.data());
    if (shared == nullptr) {
      gpu_->MoeExperts(gx, gids, gweights, experts, begin, out);
    } else {
      EXPECT_TRUE(gpu_->MoeExpertsWithShared(gx, gids, gweights, experts, begin, *shared, out));
    }
    return ToHost(*gpu_, out);
  }

  // MoeExperts over the local experts [begin, experts) for tokens routed by `ids`, GPU against
  // both CPUs. The grouped path serves at most 256 tokens.
  void Check(const Routing& ids, int64_t top_k, int64_t begin, const std::string& what) {
    const int64_t t = static_cast<int64_t>(ids.size()) / top_k, e = cw_.size(), h = h_;
    ASSERT_LE(t, 256) << "beyond the grouped path";
    auto x = RandomBf16(t * h, rng_, 2.0f);
    std::vector<float> weights(t * top_k);
    for (int64_t i = 0; i < t * top_k; ++i) {
      weights[i] = 0.2f + 0.3f * static_cast<float>(i % top_k);
    }
    const TensorView hids =
        TensorView::Contiguous(const_cast<int32_t*>(ids.data()), DType::kI32, {t, top_k});
    std::vector<float> want(t * h), emulated(t * h);
    cpu_.MoeExperts(Host(x, t, h), hids, Host(weights, t, top_k),
                    std::span<const ExpertWeights>(cw_.data() + begin, e - begin), begin,
                    Host(want, t, h));
    emu_.MoeExperts(Host(x, t, h), hids, Host(weights, t, top_k),
                    std::span<const ExpertWeights>(ew_.data() + begin, e - begin), begin,
                    Host(emulated, t, h));
    const auto got = GpuMoe(x, ids, top_k, weights,
                            std::span<const ExpertWeights>(gw_.data() + begin, e - begin), begin);
    std::printf("grouped moe %s begin=%ld: gpu-emu %.2e gpu-cpu %.2e\n", what.c_str(), begin,
                RelError(got, emulated), RelError(got, want));
    EXPECT_LT(RelError(got, emulated), kEmulatedTol) << what << " begin=" << begin;
    EXPECT_LT(RelError(got, want), kFp8ActTol) << what << " begin=" << begin;
  }

  int64_t h_ = 0;
  std::vector<ExpertWeights> cw_, ew_, gw_, gkb_;
};

// PrepareRoutedExperts moves each code to where kernels/weight_layout.cuh says: byte (r, k) of
// the padded [N_pad, K_pad] matrix to ((k / 128) N_pad + r) 128 + k % 128 (zeros past N and K).
TEST_F(CudaGroupedMoeTest, PrepareRoutedExpertsLaysCodesOutKBlockMajor) {
  const int64_t n = 300, k = 1000;
  Fp8Weight w = RandomFp8(n, k, rng_);
  std::vector<ExpertWeights> experts(1);
  for (LinearWeight* lw : {&experts[0].gate, &experts[0].up, &experts[0].down}) {
    auto g = gpu_->MakeLinear(w.weight(), w.scale_inv(), gpu_store_);
    ASSERT_TRUE(g.ok());
    *lw = *g;
  }
  ASSERT_TRUE(gpu_->PrepareRoutedExperts(experts).ok());
  const int64_t k_pad = experts[0].gate.weight.strides[0];
  const int64_t n_pad = kernels::WeightRowsPadded(n);
  std::vector<uint8_t> got(n_pad * k_pad);
  gpu_->Synchronize();
  ASSERT_EQ(cudaMemcpy(got.data(), experts[0].up.weight.data, got.size(), cudaMemcpyDeviceToHost),
            cudaSuccess);
  int64_t wrong = 0;
  for (int64_t r = 0; r < n_pad; ++r) {
    for (int64_t c = 0; c < k_pad; ++c) {
      const uint8_t want = r < n && c < k ? w.q[r * k + c] : 0;
      wrong += got[(c / 128 * n_pad + r) * 128 + c % 128] != want;
    }
  }
  EXPECT_EQ(wrong, 0) << "of " << got.size() << " codes";
}

// The grouped kernels read k-block-major experts (PrepareRoutedExperts) in the same blocks and
// order as row-major ones: the same bits on every path: the small-M kernel at 1 to 256 tokens
// (its chunks of 8 rows among them), the tiled kernel above (TMA boxes through the second map),
// and the small-M kernel with a row-major shared expert beside k-block-major routed ones. Ragged
// H = 1000 and I = 300 (N not a multiple of 64: the padding rows).
TEST_F(CudaGroupedMoeTest, KBlockMajorExpertsGiveRowMajorBits) {
  const int64_t e = 16, top_k = 4;
  MakeExperts(e, 1000, 300);
  auto route_weights = [&](int64_t t) {
    std::vector<float> weights(t * top_k);
    for (int64_t i = 0; i < t * top_k; ++i) weights[i] = 0.25f + 0.125f * (i % top_k);
    return weights;
  };
  for (int64_t t : {1, 5, 37, 256, 300, 700}) {
    const Routing ids = RandomRouting(t, top_k, e, rng_);
    const auto x = RandomBf16(t * h_, rng_, 2.0f);
    const auto weights = route_weights(t);
    EXPECT_EQ(GpuMoe(x, ids, top_k, weights, gw_), GpuMoe(x, ids, top_k, weights, gkb_))
        << "t=" << t;
  }
  // One shared expert per set of routed ones, the same weights: the backend keys a launch's
  // device table by the shared expert's gate, as a layer's experts come with their own.
  ExpertWeights shared, shared_copy;
  shared.gate = MakeLinears(300, 1000, &shared_copy.gate).gpu;
  shared.up = MakeLinears(300, 1000, &shared_copy.up).gpu;
  shared.down = MakeLinears(1000, 300, &shared_copy.down).gpu;
  for (int64_t t : {1, 8}) {
    const Routing ids = RandomRouting(t, top_k, e, rng_);
    const auto x = RandomBf16(t * h_, rng_, 2.0f);
    const auto weights = route_weights(t);
    EXPECT_EQ(GpuMoe(x, ids, top_k, weights, gw_, 0, &shared),
              GpuMoe(x, ids, top_k, weights, gkb_, 0, &shared_copy))
        << "with the shared expert, t=" << t;
  }
}

// 8 experts, ragged H = 1000 and I = 300 (I not a multiple of 16; K split over 4 and 2 warps).
TEST_F(CudaGroupedMoeTest, RaggedExpertsWithEmptyAndMultiPassExpertsMatchCpu) {
  const int64_t e = 8, top_k = 2;
  MakeExperts(e, 1000, 300);
  {
    // Expert 0 takes all 40 tokens (two 32-row passes, the second ragged); experts 1-3 share the
    // second choice; experts 4-7 get none.
    const int64_t t = 40;
    Routing ids(t * top_k);
    for (int64_t i = 0; i < t; ++i) {
      ids[i * top_k] = 0;
      ids[i * top_k + 1] = static_cast<int32_t>(1 + i % 3);
    }
    for (int64_t begin : {0, 3}) Check(ids, top_k, begin, "skewed t=40");
  }
  {
    // Two experts with 100 rows each: four passes, the last with 4 rows.
    const int64_t t = 100;
    Routing ids(t * top_k);
    for (int64_t i = 0; i < t; ++i) {
      ids[i * top_k] = 6;
      ids[i * top_k + 1] = 5;
    }
    for (int64_t begin : {0, 5}) Check(ids, top_k, begin, "two experts t=100");
  }
  for (int64_t t : {1, 3, 7, 64, 256}) {
    const Routing ids = RandomRouting(t, top_k, e, rng_);
    for (int64_t begin : {0, 3}) Check(ids, top_k, begin, "random t=" + std::to_string(t));
  }
}

// 64 experts, top 8: at T = 256 (64 experts active) both GEMM phases have enough column tiles
// times experts to run unsplit (one warp per column tile, 8 tiles per block), and about half the
// experts have more than 32 rows; at T = 2 (16 active) K is split again.
TEST_F(CudaGroupedMoeTest, ManyExpertsUnsplitKMatchCpu) {
  const int64_t e = 64, top_k = 8;
  MakeExperts(e, 1024, 512);
  for (int64_t t : {2, 256}) {
    const Routing ids = RandomRouting(t, top_k, e, rng_);
    Check(ids, top_k, 0, "t=" + std::to_string(t));
  }
}

}  // namespace
}  // namespace dsv3
