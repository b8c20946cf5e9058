// The absorbed MLA's weight-streaming products for decode (kernels/mla_absorb.cu) against a host
// F64 reference from the same BF16 inputs, so only summation order and the output's BF16
// rounding differ: W_UK (q_lat_h = q_nope_h W_UK_h, A_h the transpose of kv_b's rows) and W_UV
// (out_h = o_lat_h W_UV_h^T), laid out as cuda_attention.cc passes them (q_nope inside q
// [T, heads, nope + rope], o_lat and q_lat [T, heads, lora]), at 1, 3 and 8 tokens. Shapes:
// DeepSeek-V3's (128 heads, nope = v = 128, lora 512) and 16 heads at ragged dims (blocks with
// idle warps, k-ranges of odd length and empty ones). Outputs are poisoned (NaN) first and have 8
// token rows and padded rows: every element of the first T rows must be written, nothing else.
// The activations are written by a kernel just before, so with PDL a read before the kernel's
// wait would see the poison.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/backend/dtype.h"
#include "kernels/elementwise.cuh"
#include "kernels/mla_absorb.cuh"
#include "kernels/programmatic_launch.h"
#include "tests/gpu/gpu_test_util.h"

namespace dsv3 {
namespace {

using testing::DeviceBuffer;

using kernels::kMlaAbsorbMaxTokens;
using kernels::MlaAbsorbParams;

constexpr double kTol = 1e-2;
constexpr int64_t kOutPad = 8;  // elements past heads * m in each output row: must stay poisoned

struct Shape {
  const char* name;
  int32_t heads, nope, rope, v, lora;
};
constexpr Shape kV3{"v3", 128, 128, 64, 128, 512};
// W_UK: m = 80 (a block of 64 rows, then one of 16: three idle warps), k = 48 (k-ranges of one
// k-step, the last empty); W_UV: m = 48 (one idle warp), k = 80 (ranges of 2, 2, 1, 0 k-steps).
constexpr Shape kRagged{"16 heads ragged", 16, 48, 16, 48, 80};

enum class Form { kWuk, kWuv };

// BF16 codes of uniform values in [-1, 1].
std::vector<uint16_t> RandomCodes(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = F32ToBf16(u(rng));
  return v;
}

class CudaMlaAbsorbTest : public ::testing::Test {
 protected:
  void SetUp() override { DSV3_SKIP_WITHOUT_GPU(); }

  void Check(const Shape& s, Form form, int32_t tokens, bool pdl) {
    const bool wuk = form == Form::kWuk;
    const int64_t head_rows = s.nope + s.v;  // rows of kv_b per head
    const int32_t m = wuk ? s.lora : s.v, k = wuk ? s.nope : s.lora;
    // kv_b [heads * (nope + v), lora]: head h's W_UK_h is rows [h * head_rows, + nope), its
    // W_UV_h the next v rows.
    const std::vector<uint16_t> w = RandomCodes(s.heads * head_rows * s.lora, rng_);
    // x: q [T, heads, nope + rope] (W_UK reads each head's first nope) or o_lat [T, heads, lora].
    const int64_t x_head_stride = wuk ? s.nope + s.rope : s.lora;
    const int64_t x_token_stride = s.heads * x_head_stride;
    const std::vector<uint16_t> x = RandomCodes(tokens * x_token_stride, rng_);
    // out: q_lat or the attention output, [8, heads * m + kOutPad].
    const int64_t out_stride = s.heads * m + kOutPad;
    const size_t x_bytes = x.size() * 2, out_bytes = kMlaAbsorbMaxTokens * out_stride * 2;

    DeviceBuffer d_w(w.data(), w.size() * 2), d_staged(x.data(), x_bytes);
    DeviceBuffer d_x(x_bytes), d_out(out_bytes);
    ASSERT_EQ(cudaMemset(d_x.get<void>(), 0xff, x_bytes), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_out.get<void>(), 0xff, out_bytes), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);

    const MlaAbsorbParams p{.w = d_w.get<uint16_t>() + (wuk ? 0 : s.nope * s.lora),
                            .w_row_stride = s.lora,
                            .w_head_stride = head_rows * s.lora,
                            .transposed = wuk,
                            .m = m,
                            .k = k,
                            .x = d_x.get<uint16_t>(),
                            .x_token_stride = x_token_stride,
                            .x_head_stride = x_head_stride,
                            .out = d_out.get<uint16_t>(),
                            .out_token_stride = out_stride,
                            .out_head_stride = m,
                            .tokens = tokens,
                            .heads = s.heads};
    ASSERT_TRUE(kernels::MlaAbsorbSupports(p));
    kernels::SetProgrammaticLaunch(pdl);
    kernels::Copy2D(
        {d_staged.get<void>(), x_token_stride, kernels::ElemType::kBF16, d_x.get<void>(),
         x_token_stride, kernels::ElemType::kBF16, tokens, x_token_stride},
        stream);
    kernels::MlaAbsorb(p, stream);
    kernels::SetProgrammaticLaunch(false);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
    std::vector<uint16_t> out(kMlaAbsorbMaxTokens * out_stride);
    ASSERT_EQ(cudaMemcpy(out.data(), d_out.get<void>(), out_bytes, cudaMemcpyDeviceToHost),
              cudaSuccess);

    std::vector<float> got, want;
    for (int32_t t = 0; t < tokens; ++t) {
      for (int32_t h = 0; h < s.heads; ++h) {
        const uint16_t* xh = &x[t * x_token_stride + h * x_head_stride];
        const uint16_t* wh = &w[h * head_rows * s.lora];
        for (int32_t j = 0; j < m; ++j) {
          double acc = 0;
          for (int32_t i = 0; i < k; ++i) {
            // W_UK: A_h[j, i] = W_UK_h[i, j]; W_UV: A_h[j, i] = W_UV_h[j, i].
            const uint16_t a = wuk ? wh[i * s.lora + j] : wh[(s.nope + j) * s.lora + i];
            acc += static_cast<double>(Bf16ToF32(a)) * Bf16ToF32(xh[i]);
          }
          want.push_back(static_cast<float>(acc));
          got.push_back(Bf16ToF32(out[t * out_stride + h * m + j]));
        }
      }
    }
    int64_t outside = 0;  // written elements of token rows past T or of the row padding
    for (int64_t t = 0; t < kMlaAbsorbMaxTokens; ++t) {
      for (int64_t c = t < tokens ? s.heads * m : 0; c < out_stride; ++c) {
        outside += !std::isnan(Bf16ToF32(out[t * out_stride + c]));
      }
    }
    const double err = testing::RelError(got, want);
    std::printf("mla absorb %s %s, %d tokens%s: rel err %.2e\n", s.name, wuk ? "W_UK" : "W_UV",
                tokens, pdl ? ", pdl" : "", err);
    EXPECT_LE(err, kTol) << s.name << (wuk ? " W_UK" : " W_UV") << " tokens " << tokens;
    EXPECT_EQ(outside, 0) << s.name << ": elements outside [T, heads * m] written";
  }

  std::mt19937 rng_{2026};
};

TEST_F(CudaMlaAbsorbTest, WukMatchesHostReference) {
  for (const Shape& s : {kV3, kRagged}) {
    for (int32_t tokens : {1, 3, 8}) Check(s, Form::kWuk, tokens, false);
  }
}

TEST_F(CudaMlaAbsorbTest, WuvMatchesHostReference) {
  for (const Shape& s : {kV3, kRagged}) {
    for (int32_t tokens : {1, 3, 8}) Check(s, Form::kWuv, tokens, false);
  }
}

// The weight loads are issued before the wait for the kernel before; the activations, written by
// that kernel (Copy2D here), must be read only after it.
TEST_F(CudaMlaAbsorbTest, ReadsActivationsAfterTheKernelBeforeUnderPdl) {
  for (Form form : {Form::kWuk, Form::kWuv}) {
    for (int32_t tokens : {1, 8}) Check(kV3, form, tokens, true);
  }
}

}  // namespace
}  // namespace dsv3
