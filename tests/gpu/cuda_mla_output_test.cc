// MLA's attention and o_proj as one op (CudaBackend::MlaAttentionLinear with
// Options::quantize_in_w_uv, the default: W_UV's weight-streaming kernel also quantizes its output
// for o_proj's small-M GEMM, a head's two blocks sharing each token's amax as a cluster) against
// the parts on a backend without the option (MlaAttention, then Linear, whose quantization kernel
// reads attn back): attn and out equal bit for bit. One token with its keys split (W_UV merging
// the splits too), three and eight decode tokens, and six tokens in the naive mode (no W_UV
// kernel: the quantization kernel runs instead); 16 and 128 heads at V3's head dims; F32 and
// BF16 out; the decode steps also replayed from a CUDA graph captured with PDL.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <tuple>
#include <utility>
#include <vector>

#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/programmatic_launch.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/mla_test_cases.h"

namespace dsv3 {
namespace {

using testing::Fp8Weight;
using testing::MakeMlaCase;
using testing::MlaCase;
using testing::MlaParamsOf;
using testing::MlaShape;
using testing::RandomBf16;
using testing::RandomFp8;
using testing::RelError;
using testing::SectionCount;
using testing::ToHost;

class CudaMlaOutputTest : public testing::GpuTest {
 protected:
  std::mt19937 rng_{20261205};
};

TEST_F(CudaMlaOutputTest, WuvQuantizingForOprojEqualsParts) {
  CudaBackend::Options options;
  options.quantize_in_w_uv = true;
  auto fused_backend = CudaBackend::Create(options);
  ASSERT_TRUE(fused_backend.ok()) << fused_backend.status();
  CudaBackend& fused = **fused_backend;
  options.quantize_in_w_uv = false;
  auto parts_backend = CudaBackend::Create(options);
  ASSERT_TRUE(parts_backend.ok()) << parts_backend.status();
  CudaBackend& parts = **parts_backend;
  SectionCount paths("- mla: W_UV's kernel quantizes for o_proj");
  fused.SetOpSections(&paths);
  int expected_paths = 0;
  constexpr int64_t kHidden = 384;  // o_proj's rows
  struct Batch {
    std::vector<std::pair<int32_t, int32_t>> seqs;  // (context, new tokens)
    MlaMode mode;
  };
  const Batch batches[] = {
      {{{20000, 1}}, MlaMode::kAuto},                 // one token, split keys
      {{{300, 1}, {1000, 1}, {129, 1}}, MlaMode::kAuto},  // three decode tokens
      {{{50, 1}, {60, 1}, {70, 1}, {80, 1}, {90, 1}, {100, 1}, {110, 1}, {4000, 1}},
       MlaMode::kAuto},
      {{{0, 5}, {63, 1}}, MlaMode::kNaive},  // no W_UV kernel
  };
  for (const MlaShape s : {MlaShape{16, 128, 64, 128, 512}, MlaShape{128, 128, 64, 128, 512}}) {
    const int64_t kv_dim = s.lora + s.rope, qk = s.nope + s.rope;
    Fp8Weight wkvb = RandomFp8(s.heads * (s.nope + s.v), s.lora, rng_);
    Fp8Weight wo = RandomFp8(kHidden, s.heads * s.v, rng_);
    std::vector<Tensor> store;
    auto kvb = gpu_->MakeLinear(wkvb.weight(), wkvb.scale_inv(), store);
    auto o_proj = gpu_->MakeLinear(wo.weight(), wo.scale_inv(), store);
    ASSERT_TRUE(kvb.ok() && o_proj.ok());
    for (const Batch& b : batches) {
      const bool quantizes = b.mode != MlaMode::kNaive;
      MlaCase c = MakeMlaCase(rng_, b.seqs, 64);
      c.batch.kv_lora_rank = s.lora;
      c.batch.rope_dim = s.rope;
      c.batch.mla_mode = b.mode;
      MlaParams p = MlaParamsOf(s);
      p.mode = b.mode;
      const int64_t t = c.tokens, slots = c.num_blocks * 64;
      Tensor cache = Dev(RandomBf16(slots * kv_dim, rng_, 1.0f), slots, kv_dim);
      const TensorView cache3 = cache.view().Reshape({c.num_blocks, 64, kv_dim});
      Tensor q = Dev(RandomBf16(t * s.heads * qk, rng_, 1.0f), t, s.heads * qk);
      const TensorView q3 = q.view().Reshape({t, s.heads, qk});
      for (const DType out_type : {DType::kF32, DType::kBF16}) {
        Tensor want_attn = DevEmpty(DType::kBF16, t, s.heads * s.v);
        Tensor got_attn = DevEmpty(DType::kBF16, t, s.heads * s.v);
        Tensor want = DevEmpty(out_type, t, kHidden), got = DevEmpty(out_type, t, kHidden);
        gpu_->Synchronize();  // inputs and weights made on gpu_'s stream
        parts.BeginStep(c.batch);
        parts.MlaAttentionLinear(q3, cache3, *kvb, c.batch, p, want_attn, *o_proj, want);
        parts.Synchronize();
        fused.BeginStep(c.batch);
        fused.MlaAttentionLinear(q3, cache3, *kvb, c.batch, p, got_attn, *o_proj, got);
        expected_paths += quantizes ? 1 : 0;
        auto expect_equal = [&](const char* how) {
          for (auto [name, g, w] : {std::tuple{"attn", &got_attn, &want_attn},
                                    std::tuple{"out", &got, &want}}) {
            const std::vector<float> gh = ToHost(fused, *g), wh = ToHost(parts, *w);
            int64_t differ = 0;
            for (size_t i = 0; i < gh.size(); ++i) differ += gh[i] != wh[i];
            EXPECT_EQ(differ, 0) << how << ": " << name << ", " << s.heads << " heads, " << t
                                 << " tokens, out " << DTypeName(out_type)
                                 << ": relative error " << RelError(gh, wh);
          }
        };
        expect_equal("eager");
        if (!quantizes || out_type != DType::kF32) continue;
        // Captured with PDL as decode steps are (the cluster launch among programmatic edges),
        // replayed into poisoned outputs.
        const cudaStream_t stream = fused.stream();
        cudaGraph_t graph;
        kernels::SetProgrammaticLaunch(true);
        ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
        fused.MlaAttentionLinear(q3, cache3, *kvb, c.batch, p, got_attn, *o_proj, got);
        ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
        kernels::SetProgrammaticLaunch(false);
        ++expected_paths;
        cudaGraphExec_t exec;
        ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
        for (const Tensor* o : {&got_attn, &got}) testing::Poison(fused, *o);
        ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
        expect_equal("graph replay");
        EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
        EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
      }
    }
  }
  fused.SetOpSections(nullptr);
  EXPECT_EQ(paths.count, expected_paths) << "W_UV's kernel did not quantize every decode step";
}

}  // namespace
}  // namespace dsv3
