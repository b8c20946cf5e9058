// The CUDA op cases the op table (tests/op_table.h, gpu_cuda_op_table_test) cannot express:
// strided views (RMSNorm in place on columns, rope inside a query), mixed-dtype rounding, FP8
// linears on the fixtures' own weights, MLA over a paged batch (a block-table layout the table
// has no rows for yet), and the MoE experts against the emulating CPU as well as the CPU. GPU
// outputs are poisoned (NaN) before each run; shapes are ragged: M = 1, 3, 5, 100 and N, K not
// multiples of 128. Thresholds are by dtype: BF16 activations ~1e-2; FP8 activation
// quantization ~6e-2 against the unquantized CPU reference, and ~1e-2 against the CPU fed the
// same quantized activations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <tuple>
#include <string>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/gpu_emulation_backend.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/weights/checkpoint.h"
#include "engine/weights/linear_stack.h"
#include "kernels/flash_mla_cut.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/mla_test_cases.h"
#include "tests/mla_batch_util.h"
#include "tests/moe_routing_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using testing::CopyIn;
using testing::Fp8Weight;
using testing::MakeMlaCase;
using testing::MlaCase;
using testing::MlaParamsOf;
using testing::MlaShape;
using testing::OneSequenceStep;
using testing::PickWeights;
using testing::Poison;
using testing::RandomBf16;
using testing::RandomFp8;
using testing::RandomRouting;
using testing::RelError;
using testing::RopeInvFreq;
using testing::SectionCount;
using testing::ToHost;

constexpr double kBf16Tol = 1e-2;
constexpr double kFp8ActTol = 6e-2;
constexpr int64_t kRows[] = {1, 3, 5, 100};

class CudaOpsTest : public testing::GpuTest {
 protected:
  CpuBackend cpu_{4};
  std::mt19937 rng_{12345};
};

TEST_F(CudaOpsTest, RmsNormInPlaceOnStridedColumns) {
  // The model normalizes c = latent[:, :kv_lora] in place inside [T, kv_lora + rope].
  const int64_t m = 5, width = 96, d = 80;
  auto x = RandomBf16(m * width, rng_), w = RandomBf16(d, rng_);
  std::vector<float> want = x;
  TensorView hv = Host(want, m, width);
  hv.shape[1] = d;
  cpu_.RmsNorm(hv, TensorView::Contiguous(w.data(), DType::kF32, {d}), 1e-6f, hv);
  Tensor gx = Dev(x, m, width);
  Tensor gw(gpu_->allocator(), DType::kF32, {d});
  CopyIn(*gpu_, gw, w.data());
  TensorView gv = gx.view();
  gv.shape[1] = d;
  gpu_->RmsNorm(gv, gw, 1e-6f, gv);
  EXPECT_LT(RelError(ToHost(*gpu_, gx), want), kBf16Tol);
}

// A BF16 plus an F32 operand into BF16 rounds once: exactly round_bf16(float(a) + b) (the model's
// residual additions are F32 throughout). And Copy places an F32 block into columns of a
// wider matrix (the tensor-parallel head), leaving the other columns alone.
TEST_F(CudaOpsTest, MixedAddRoundsOnceAndCopyFillsColumns) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int64_t m : kRows) {
    const int64_t d = 200, wide = 3 * d;
    auto a = RandomBf16(m * d, rng_, 4.0f);
    std::vector<float> b(m * d), want(m * d);
    for (float& v : b) v = normal(rng_);
    for (int64_t i = 0; i < m * d; ++i) want[i] = Bf16ToF32(F32ToBf16(a[i] + b[i]));
    Tensor ga = Dev(a, m, d), gb = DevEmpty(DType::kF32, m, d), gs = DevEmpty(DType::kBF16, m, d);
    CopyIn(*gpu_, gb, b.data());
    gpu_->Add(ga, gb, gs);
    EXPECT_EQ(RelError(ToHost(*gpu_, gs), want), 0.0) << "mixed add m=" << m;

    Tensor full = DevEmpty(DType::kF32, m, wide);
    TensorView middle = full.view();
    middle.data = static_cast<float*>(middle.data) + d;
    middle.shape[1] = d;
    gpu_->Copy(gb, middle);
    const std::vector<float> got = ToHost(*gpu_, full);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < wide; ++c) {
        const float v = got[r * wide + c];
        if (c >= d && c < 2 * d) {
          ASSERT_EQ(v, b[r * d + c - d]) << "copy m=" << m << " row " << r << " col " << c;
        } else {
          ASSERT_TRUE(std::isnan(v)) << "copy wrote outside its columns: row " << r << " col " << c;
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, RopeMatchesCpuInsideStridedQuery) {
  // q [T, heads, nope + rope] with q_pe = the last `rope` columns of each head, as the model has.
  for (bool interleaved : {true, false}) {
    for (int64_t t : kRows) {
      // Heads: fewer than the kernel's 8 per thread, or 2 groups and a partial one.
      const int64_t heads = t % 2 == 0 ? 5 : 19, nope = 24, rope = 64, qk = nope + rope;
      std::vector<float> inv_freq(rope / 2);
      for (int64_t i = 0; i < rope / 2; ++i) {
        inv_freq[i] = std::pow(10000.0f, -2.0f * i / rope) / (i > 10 ? 40.0f : 1.0f);
      }
      RopeParams rp{inv_freq.data(), rope, 1.1f, interleaved};
      std::vector<int32_t> pos(t);
      for (auto& p : pos) p = static_cast<int32_t>(rng_() % 163840);
      auto q = RandomBf16(t * heads * qk, rng_);
      std::vector<float> want = q;
      TensorView hv = TensorView::Contiguous(want.data() + nope, DType::kF32, {t, heads, rope});
      hv.strides = {heads * qk, qk, 1, 0};
      cpu_.Rope(hv, pos, rp);
      Tensor gq = Dev(q, t, heads * qk);
      TensorView gv = gq.view();
      gv.data = static_cast<char*>(gv.data) + nope * 2;
      gv.ndim = 3;
      gv.shape = {t, heads, rope, 0};
      gv.strides = {heads * qk, qk, 1, 0};
      gpu_->Rope(gv, pos, rp);
      EXPECT_LT(RelError(ToHost(*gpu_, gq), want), kBf16Tol) << "t=" << t;
    }
  }
}

// x quantized per token per 128 columns as the GPU does, then dequantized (host reference).
std::vector<float> QuantizeDequantize(const std::vector<float>& x, int64_t m, int64_t k) {
  std::vector<float> out(x.size());
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c0 = 0; c0 < k; c0 += 128) {
      const int64_t c1 = std::min(k, c0 + 128);
      float amax = 0;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * k + c]));
      const float s = std::max(amax, 1e-4f) / 448.0f;
      for (int64_t c = c0; c < c1; ++c) {
        out[r * k + c] = Fp8E4M3ToF32(F32ToFp8E4M3(x[r * k + c] / s)) * s;
      }
    }
  }
  return out;
}

// Every FP8 linear weight of the FP8 fixtures, loaded by both backends, against the CPU that
// emulates the GPU's activation quantization and BF16 rounding: the op-level check under the
// fixture model tests (a weight layout or scale bug shows here, free of the models' error
// amplification). Only the BF16 output rounding and the summation order differ.
TEST_F(CudaOpsTest, Fp8LinearOnFixtureWeightsMatchesEmulatedCpu) {
  GpuEmulationBackend emu(4, GpuEmulation{.fp8_activations = true, .bf16_activations = true});
  for (const char* fixture : {"tiny-fp8", "ragged-fp8", "noqlora-fp8"}) {
    auto ckpt = Checkpoint::Open(::dsv3::testing::FixturePath(fixture));
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    double worst = 0;
    for (const std::string& name : (*ckpt)->Names()) {
      auto stored = (*ckpt)->Get(name);
      ASSERT_TRUE(stored.ok());
      if (stored->dtype != DType::kF8E4M3) continue;
      const std::string prefix = name.substr(0, name.size() - std::string(".weight").size());
      const int64_t n = stored->dim(0), k = stored->dim(1);
      std::vector<Tensor> cpu_store, gpu_store;
      auto ew = emu.LoadLinear(**ckpt, prefix, n, k, {}, cpu_store);
      auto gw = gpu_->LoadLinear(**ckpt, prefix, n, k, {}, gpu_store);
      ASSERT_TRUE(ew.ok() && gw.ok()) << name;
      for (int64_t m : {1, 5, 64}) {
        auto x = RandomBf16(m * k, rng_, 2.0f);
        std::vector<float> want(m * n);
        emu.Linear(Host(x, m, k), *ew, Host(want, m, n));
        Tensor gx = Dev(x, m, k), gy = DevEmpty(DType::kBF16, m, n);
        gpu_->Linear(gx, *gw, gy);
        const double err = RelError(ToHost(*gpu_, gy), want);
        worst = std::max(worst, err);
        EXPECT_LT(err, kBf16Tol) << fixture << " " << name << " M=" << m;
      }
    }
    std::printf("fixture FP8 linears %s: worst GPU vs emulated CPU %.2e\n", fixture, worst);
  }
}

class CudaMlaTest : public CudaOpsTest, public ::testing::WithParamInterface<MlaShape> {};

TEST_P(CudaMlaTest, WriteKvCacheAndAttentionMatchCpuInEveryMode) {
  const MlaShape s = GetParam();
  const int64_t kv_dim = s.lora + s.rope, qk = s.nope + s.rope;
  // 20 one-token sequences (contexts 150..299) with a 70-token prefill chunk after 30 cached
  // positions: both forms attend by GEMMs in kAuto (cuda_attention_gemm.cc).
  std::vector<std::pair<int32_t, int32_t>> gemm_batch = {{30, 70}};
  for (int32_t i = 0; i < 20; ++i) gemm_batch.push_back({150 + (i * 37) % 150, 1});
  const std::vector<std::vector<std::pair<int32_t, int32_t>>> batches = {
      {{0, 1}},                              // first token
      {{0, 3}},                              // short prefill
      {{17, 1}, {40, 1}, {5, 1}},            // decode
      {{0, 37}, {20, 1}, {16, 5}, {63, 1}},  // mixed prefill chunks and decode
      {{300, 1}, {1000, 1}, {129, 1}},       // long decode: keys split over blocks
      {{4000, 1}, {700, 3}, {63, 2}},        // splits empty for the short items; verify-like
      {{0, 100}, {64, 90}},                  // long prefills: naive form by GEMMs
      {{40, 1100}, {2, 1}},                  // a prompt longer than a causal run (512)
      gemm_batch,
  };
  Fp8Weight wkvb = RandomFp8(s.heads * (s.nope + s.v), s.lora, rng_);
  std::vector<Tensor> cpu_store, gpu_store;
  auto ckvb = cpu_.MakeLinear(wkvb.weight(), wkvb.scale_inv(), cpu_store);
  auto gkvb = gpu_->MakeLinear(wkvb.weight(), wkvb.scale_inv(), gpu_store);
  ASSERT_TRUE(ckvb.ok() && gkvb.ok());
  MlaParams p = MlaParamsOf(s);
  // Pages of 16 keys (the flash decode kernel gathers rows by cp.async) and of 64 (whole tiles
  // by TMA, a range's partial last tile by cp.async).
  for (const int32_t block_size : {16, 64}) {
    for (const auto& seqs : batches) {
      MlaCase c = MakeMlaCase(rng_, seqs, block_size);
      c.batch.kv_lora_rank = s.lora;  // as the model says it: the backend picks paths by them
      c.batch.rope_dim = s.rope;
      const int64_t t = c.tokens, slots = c.num_blocks * block_size;
      // The cache holds random context; the new tokens' latents are written by WriteKvCache.
      auto cache = RandomBf16(slots * kv_dim, rng_, 1.0f);
      auto latent = RandomBf16(t * kv_dim, rng_, 1.0f);
      auto q = RandomBf16(t * s.heads * qk, rng_, 1.0f);
      TensorView ccache =
          TensorView::Contiguous(cache.data(), DType::kF32, {c.num_blocks, block_size, kv_dim});
      Tensor gcache = Dev(cache, slots, kv_dim);
      TensorView gcache3 = gcache.view().Reshape({c.num_blocks, block_size, kv_dim});
      cpu_.WriteKvCache(Host(latent, t, kv_dim), c.batch, ccache);
      Tensor glatent = Dev(latent, t, kv_dim);
      gpu_->BeginStep(c.batch);  // the step plan WriteKvCache and MlaAttention read
      gpu_->WriteKvCache(glatent, c.batch, gcache3);
      EXPECT_EQ(RelError(ToHost(*gpu_, gcache), cache), 0.0);

      TensorView cq = TensorView::Contiguous(q.data(), DType::kF32, {t, s.heads, qk});
      Tensor gq = Dev(q, t, s.heads * qk);
      TensorView gq3 = gq.view().Reshape({t, s.heads, qk});
      for (MlaMode mode : {MlaMode::kAuto, MlaMode::kNaive, MlaMode::kAbsorbed}) {
        p.mode = mode;
        c.batch.mla_mode = mode;
        gpu_->BeginStep(c.batch);  // a plan per mode: its forms and attention paths
        std::vector<float> want(t * s.heads * s.v);
        cpu_.MlaAttention(cq, ccache, *ckvb, c.batch, p, Host(want, t, s.heads * s.v));
        Tensor out = DevEmpty(DType::kBF16, t, s.heads * s.v);
        gpu_->MlaAttention(gq3, gcache3, *gkvb, c.batch, p, out);
        EXPECT_LT(RelError(ToHost(*gpu_, out), want), 2e-2)
            << "mode " << static_cast<int>(mode) << " tokens " << t << " block size " << block_size;
      }
    }
  }
}

// Absorbed steps at lora 512 / rope 64 run the flash decode kernel (16 heads: a part-filled
// group of 64; 128 heads: two groups), at lora 80 the decode GEMMs.
INSTANTIATE_TEST_SUITE_P(Shapes, CudaMlaTest,
                         ::testing::Values(MlaShape{3, 24, 16, 20, 80},
                                           MlaShape{16, 128, 64, 128, 512},
                                           MlaShape{128, 128, 64, 128, 512}));

// One-token decode steps whose flash launch cuts the keys into parts: W_UV's kernel merging the
// pieces itself (CudaBackend::Options::merge_in_w_uv) gives the bits of the combine kernel
// followed by W_UV, at one and two groups of 64 heads and contexts of 1 to 20000 keys (up to
// 105 parts); the merge runs in exactly the steps whose launch the rule cuts.
TEST_F(CudaOpsTest, OneTokenSplitsMergedInWuvEqualCombineKernel) {
  CudaBackend::Options options;
  options.merge_in_w_uv = true;
  auto merging = CudaBackend::Create(options);
  ASSERT_TRUE(merging.ok()) << merging.status();
  options.merge_in_w_uv = false;
  auto combining = CudaBackend::Create(options);
  ASSERT_TRUE(combining.ok()) << combining.status();
  SectionCount merges("- mla: pieces merged by W_UV's kernel");  // the steps that took it
  (*merging)->SetOpSections(&merges);
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  int cut = 0;  // the steps the rule cuts into parts
  for (const MlaShape s : {MlaShape{16, 128, 64, 128, 512}, MlaShape{128, 128, 64, 128, 512}}) {
    const int64_t kv_dim = s.lora + s.rope, qk = s.nope + s.rope;
    Fp8Weight wkvb = RandomFp8(s.heads * (s.nope + s.v), s.lora, rng_);
    std::vector<Tensor> store;
    auto kvb = gpu_->MakeLinear(wkvb.weight(), wkvb.scale_inv(), store);
    ASSERT_TRUE(kvb.ok());
    MlaParams p = MlaParamsOf(s);
    p.mode = MlaMode::kAbsorbed;
    for (const int32_t context : {0, 63, 300, 1000, 4000, 20000}) {
      cut += kernels::FlashMlaDecodeParts(1, s.heads, context + 1, sms) > 1;
      MlaCase c = MakeMlaCase(rng_, {{context, 1}}, 64);
      c.batch.kv_lora_rank = s.lora;
      c.batch.rope_dim = s.rope;
      c.batch.mla_mode = MlaMode::kAbsorbed;
      const int64_t slots = c.num_blocks * 64;
      Tensor cache = Dev(RandomBf16(slots * kv_dim, rng_, 1.0f), slots, kv_dim);
      const TensorView cache3 = cache.view().Reshape({c.num_blocks, 64, kv_dim});
      Tensor q = Dev(RandomBf16(s.heads * qk, rng_, 1.0f), 1, s.heads * qk);
      const TensorView q3 = q.view().Reshape({1, s.heads, qk});
      Tensor want = DevEmpty(DType::kBF16, 1, s.heads * s.v);
      // Inputs and weights made on gpu_'s stream, before the other backends use them.
      gpu_->Synchronize();
      (*combining)->BeginStep(c.batch);
      (*combining)->MlaAttention(q3, cache3, *kvb, c.batch, p, want);
      (*combining)->Synchronize();
      Tensor got(merging->get()->allocator(), DType::kBF16, {1, s.heads * s.v});
      (*merging)->BeginStep(c.batch);
      (*merging)->MlaAttention(q3, cache3, *kvb, c.batch, p, got);
      const std::vector<float> g = ToHost(**merging, got), w = ToHost(*gpu_, want);
      int64_t differ = 0;
      for (size_t i = 0; i < g.size(); ++i) differ += g[i] != w[i];
      EXPECT_EQ(differ, 0) << s.heads << " heads, context " << context << ": relative error "
                           << RelError(g, w);
    }
  }
  (*merging)->SetOpSections(nullptr);
  // Contexts of one tile are never cut; 20000 keys always are.
  EXPECT_GE(cut, 2);
  EXPECT_EQ(merges.count, cut);
}

// MlaQueryAndInputs in two kernels (Options::fuse_mla_query: the latent's part beside q_a's
// norm, q_pe's RoPE in q_b's GEMM) against its parts (RmsNormLinear, then PrepareMlaInputs) on
// the same inputs: q, the normed q_lat and c, the rotated k_pe and the whole cache equal bit for
// bit, at V3's dims with 16 and 128 heads, 1 to 16 tokens of one sequence at positions around
// 70000 (large angles).
TEST_F(CudaOpsTest, MlaQueryAndInputsInTwoKernelsEqualParts) {
  CudaBackend::Options options;
  options.fuse_mla_query = true;
  auto fused_backend = CudaBackend::Create(options);
  ASSERT_TRUE(fused_backend.ok()) << fused_backend.status();
  CudaBackend& fused = **fused_backend;
  options.fuse_mla_query = false;
  auto parts_backend = CudaBackend::Create(options);
  ASSERT_TRUE(parts_backend.ok()) << parts_backend.status();
  CudaBackend& parts = **parts_backend;
  SectionCount paths("- mla query: latents beside");
  fused.SetOpSections(&paths);
  constexpr int64_t q_lora = 1536, lora = 512, rope = 64, nope = 128, head_cols = nope + rope;
  constexpr int32_t kBlock = 16, kContext = 70001;
  const std::vector<float> inv_freq = RopeInvFreq(rope);
  const RopeParams rope_params{inv_freq.data(), rope, 1.1f, true};
  // One cache of random rows for every case, with the blocks of the longest (16 tokens).
  const int32_t cache_blocks = (kContext + 16 + kBlock - 1) / kBlock;
  const std::vector<float> cache_values = RandomBf16(cache_blocks * kBlock * (lora + rope), rng_);
  int expected_paths = 0;
  for (const int64_t heads : {int64_t{16}, int64_t{128}}) {
    Fp8Weight wq = RandomFp8(heads * head_cols, q_lora, rng_);
    std::vector<Tensor> store;
    auto q_b = gpu_->MakeLinear(wq.weight(), wq.scale_inv(), store);
    ASSERT_TRUE(q_b.ok());
    std::vector<float> q_norm = RandomBf16(q_lora, rng_, 1.0f), kv_norm = RandomBf16(lora, rng_);
    Tensor dq_norm(gpu_->allocator(), DType::kF32, {q_lora});
    Tensor dkv_norm(gpu_->allocator(), DType::kF32, {lora});
    CopyIn(*gpu_, dq_norm, q_norm.data());
    CopyIn(*gpu_, dkv_norm, kv_norm.data());
    for (const int64_t t : {int64_t{1}, int64_t{3}, int64_t{8}, int64_t{16}}) {
      std::vector<int32_t> table;
      const AttentionBatch batch = OneSequenceStep(t, kContext, kBlock, lora, rope, table);
      const std::vector<float> lat = RandomBf16(t * (q_lora + lora + rope), rng_, 2.0f);
      // Each backend's own copies (the op works in place): [qkv_lat, q, cache].
      struct Run {
        Tensor qkv_lat, q, cache;
      };
      auto run = [&](CudaBackend& b) {
        Run r{Dev(lat, t, q_lora + lora + rope), DevEmpty(DType::kBF16, t, heads * head_cols),
              Dev(cache_values, cache_blocks * kBlock, lora + rope)};
        gpu_->Synchronize();  // made on gpu_'s stream
        const TensorView qkv = r.qkv_lat.view();
        TensorView q_lat = qkv, latent = qkv;
        q_lat.shape[1] = q_lora;
        latent.data = static_cast<char*>(qkv.data) + q_lora * 2;
        latent.shape[1] = lora + rope;
        TensorView c = latent, k_pe = latent;
        c.shape[1] = lora;
        k_pe.data = static_cast<char*>(latent.data) + lora * 2;
        k_pe.ndim = 3;
        k_pe.shape = {t, 1, rope, 0};
        k_pe.strides = {latent.strides[0], rope, 1, 0};
        TensorView q_pe = r.q.view();
        q_pe.data = static_cast<char*>(q_pe.data) + nope * 2;
        q_pe.ndim = 3;
        q_pe.shape = {t, heads, rope, 0};
        q_pe.strides = {heads * head_cols, head_cols, 1, 0};
        const TensorView cache3 = r.cache.view().Reshape({cache_blocks, kBlock, lora + rope});
        b.BeginStep(batch);
        b.MlaQueryAndInputs({.q_lat = q_lat,
                             .q_a_norm = dq_norm,
                             .q_b = &*q_b,
                             .q = r.q,
                             .inputs = {latent, c, k_pe, q_pe},
                             .kv_a_norm = dkv_norm,
                             .eps = 1e-6f},
                            batch.positions, rope_params, batch, cache3);
        b.Synchronize();
        return r;
      };
      const Run want = run(parts), got = run(fused);
      ++expected_paths;
      for (auto [name, g, w] :
           {std::tuple{"q", &got.q, &want.q}, std::tuple{"q_lat|latent", &got.qkv_lat,
                                                         &want.qkv_lat},
            std::tuple{"cache", &got.cache, &want.cache}}) {
        const std::vector<float> gh = ToHost(fused, *g), wh = ToHost(parts, *w);
        int64_t differ = 0;
        for (size_t i = 0; i < gh.size(); ++i) differ += gh[i] != wh[i];
        EXPECT_EQ(differ, 0) << name << ", " << heads << " heads, " << t
                             << " tokens: relative error " << RelError(gh, wh);
      }
    }
  }
  fused.SetOpSections(nullptr);
  EXPECT_EQ(paths.count, expected_paths) << "the two-kernel form did not run every time";
}

// Up to 256 tokens the grouped path (device permutation, small-M grouped FP8 kernel), beyond it
// the tiled path (device layout, wgmma grouped FP8 GEMMs over 64-row tiles of one expert); both
// against the CPU, and against the CPU emulating the GPU's rounding (GpuEmulationBackend) within
// 1e-2. Ragged widths (200, 72), widths no 8-column access fits (75, 40) and wider ones
// (1024, 512); with every expert local and with experts [3, 8) only; and a rank none of whose
// experts got a token (its part is zeros).
class CudaMoeExpertsTest : public CudaOpsTest,
                           public ::testing::WithParamInterface<std::pair<int64_t, int64_t>> {};

TEST_P(CudaMoeExpertsTest, MatchCpu) {
  const auto [h, inter] = GetParam();
  const int64_t e = 8, k = 3;
  GpuEmulationBackend emu(4, GpuEmulation{.fp8_activations = true, .bf16_activations = true});
  std::vector<ExpertWeights> cw(e), gw(e), ew(e);
  std::vector<Tensor> cpu_store, gpu_store;
  for (int64_t j = 0; j < e; ++j) {
    for (auto [field, n, kk] :
         {std::tuple{&ExpertWeights::gate, inter, h}, std::tuple{&ExpertWeights::up, inter, h},
          std::tuple{&ExpertWeights::down, h, inter}}) {
      Fp8Weight w = RandomFp8(n, kk, rng_);
      auto c = cpu_.MakeLinear(w.weight(), w.scale_inv(), cpu_store);
      auto g = gpu_->MakeLinear(w.weight(), w.scale_inv(), gpu_store);
      auto em = emu.MakeLinear(w.weight(), w.scale_inv(), cpu_store);
      ASSERT_TRUE(c.ok() && g.ok() && em.ok());
      cw[j].*field = *c;
      gw[j].*field = *g;
      ew[j].*field = *em;
    }
  }
  for (int64_t t : {1, 3, 5, 100, 300}) {
    for (int64_t begin : {0, 3}) {  // all experts here, or experts [3, 8) (expert parallel)
      auto x = RandomBf16(t * h, rng_, 2.0f);
      std::vector<int32_t> ids = RandomRouting(t, k, e, rng_);
      std::vector<float> w =
          PickWeights(t, k, [](int64_t j) { return 0.2f + 0.3f * static_cast<float>(j); });
      std::span<const ExpertWeights> cpu_local(cw.data() + begin, e - begin);
      std::span<const ExpertWeights> gpu_local(gw.data() + begin, e - begin);
      std::vector<float> want(t * h);
      cpu_.MoeExperts(Host(x, t, h), TensorView::Contiguous(ids.data(), DType::kI32, {t, k}),
                      Host(w, t, k), cpu_local, begin, Host(want, t, h));
      Tensor gx = Dev(x, t, h), out = DevEmpty(DType::kBF16, t, h);
      Tensor gids(gpu_->allocator(), DType::kI32, {t, k}),
          gwt(gpu_->allocator(), DType::kF32, {t, k});
      CopyIn(*gpu_, gids, ids.data());
      CopyIn(*gpu_, gwt, w.data());
      gpu_->MoeExperts(gx, gids, gwt, gpu_local, begin, out);
      const auto got = ToHost(*gpu_, out);
      EXPECT_LT(RelError(got, want), kFp8ActTol) << "t=" << t << " begin=" << begin;
      std::vector<float> emulated(t * h);
      emu.MoeExperts(Host(x, t, h), TensorView::Contiguous(ids.data(), DType::kI32, {t, k}),
                     Host(w, t, k), std::span<const ExpertWeights>(ew.data() + begin, e - begin),
                     begin, Host(emulated, t, h));
      EXPECT_LT(RelError(got, emulated), 1e-2) << "emulated: t=" << t << " begin=" << begin;
    }
  }
  for (int64_t t : {5, 300}) {
    auto x = RandomBf16(t * h, rng_, 2.0f);
    std::vector<int32_t> ids(t * k);
    for (int64_t i = 0; i < t * k; ++i) ids[i] = static_cast<int32_t>(i % k);  // experts 0..2
    std::vector<float> w(t * k, 0.5f);
    Tensor gx = Dev(x, t, h), out = DevEmpty(DType::kBF16, t, h);
    Tensor gids(gpu_->allocator(), DType::kI32, {t, k}),
        gwt(gpu_->allocator(), DType::kF32, {t, k});
    CopyIn(*gpu_, gids, ids.data());
    CopyIn(*gpu_, gwt, w.data());
    gpu_->MoeExperts(gx, gids, gwt, std::span<const ExpertWeights>(gw.data() + 3, e - 3), 3, out);
    const auto got = ToHost(*gpu_, out);
    EXPECT_EQ(std::count(got.begin(), got.end(), 0.0f), t * h) << "no local rows: t=" << t;
  }
}

// The shared expert fused into the grouped experts (MoeExpertsWithShared, decode-sized steps)
// against the model's way apart: the stacked gate|up GEMM, SiLU-gate, down into out's type, and
// an Add to the routed sum. At these widths both ways split K alike (its blocks are few), so the
// GEMMs give the same F32 sums and the fused combine rounds as the Add does: the outputs are
// equal bit for bit, with a BF16 out and with the model's F32 one (the layer's branch).
TEST_F(CudaOpsTest, SharedExpertFusedEqualsApart) {
  for (auto [h, inter] : {std::pair<int64_t, int64_t>{128, 128}, {1024, 512}}) {
    const int64_t e = 8, k = 3;
    std::vector<Tensor> store;
    auto fp8 = [&](int64_t n, int64_t kk) {
      Fp8Weight w = RandomFp8(n, kk, rng_);
      auto g = gpu_->MakeLinear(w.weight(), w.scale_inv(), store);
      EXPECT_TRUE(g.ok());
      return *g;
    };
    std::vector<ExpertWeights> experts;
    for (int64_t j = 0; j < e; ++j)
      experts.push_back({fp8(inter, h), fp8(inter, h), fp8(h, inter)});
    const StackedLinear gate_up{fp8(2 * inter, h), {{0, inter}, {inter, inter}}};
    const LinearWeight down = fp8(h, inter);
    const ExpertWeights shared{*gate_up.Weight(0), *gate_up.Weight(1), down};
    for (auto [t, out_type] : {std::pair{int64_t{1}, DType::kF32},
                               {int64_t{3}, DType::kF32},
                               {int64_t{8}, DType::kF32},
                               {int64_t{3}, DType::kBF16}}) {
      auto x = RandomBf16(t * h, rng_, 2.0f);
      std::vector<int32_t> ids = RandomRouting(t, k, e, rng_);
      std::vector<float> w =
          PickWeights(t, k, [](int64_t j) { return 0.2f + 0.3f * static_cast<float>(j); });
      Tensor gx = Dev(x, t, h), fused = DevEmpty(out_type, t, h);
      Tensor apart = DevEmpty(out_type, t, h), y = DevEmpty(out_type, t, h);
      Tensor gu = DevEmpty(DType::kBF16, t, 2 * inter);
      Tensor gids(gpu_->allocator(), DType::kI32, {t, k}),
          gwt(gpu_->allocator(), DType::kF32, {t, k});
      CopyIn(*gpu_, gids, ids.data());
      CopyIn(*gpu_, gwt, w.data());
      ASSERT_TRUE(gpu_->MoeExpertsWithShared(gx, gids, gwt, experts, 0, shared, fused))
          << "h=" << h << " t=" << t;
      gpu_->MoeExperts(gx, gids, gwt, experts, 0, apart);
      gpu_->Linear(gx, gate_up.weight, gu);
      const TensorView gate = gate_up.Output(gu, 0);
      gpu_->SiluMul(gate, gate_up.Output(gu, 1), gate);
      gpu_->Linear(gate, down, y);
      gpu_->Add(apart, y, apart);
      const auto got = ToHost(*gpu_, fused), want = ToHost(*gpu_, apart);
      int64_t differ = 0;
      for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
      EXPECT_EQ(differ, 0) << "h=" << h << " t=" << t << " out " << DTypeName(out_type)
                           << ": relative error " << RelError(got, want);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, CudaMoeExpertsTest,
                         ::testing::Values(std::pair<int64_t, int64_t>{200, 72},
                                           std::pair<int64_t, int64_t>{75, 40},
                                           std::pair<int64_t, int64_t>{1024, 512}));

}  // namespace
}  // namespace dsv3
