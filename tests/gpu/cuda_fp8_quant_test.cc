// The prefill experts' input (kernels/fp8_quant.cu): each token quantized once and its codes
// gathered to the routed rows (GatherQuantizedRows) give the bits that quantizing the routed rows
// one by one (QuantizeActivations with x_rows) gives, E4M3 scales and UE8M0 alike; rows past the
// device count of rows in use are left as they were by both, at a decode-sized layout (a warp per
// 128-column block) and a prefill-sized one (runs of blocks per warp).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "engine/backend/dtype.h"
#include "kernels/fp8_quant.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace dsv3 {
namespace {

using testing::DeviceBuffer;

class CudaFp8QuantTest : public testing::GpuTest {};

struct RoutedLayout {
  int64_t rows, rows_pad;
  int32_t used;  // tiles of 64 rows in use
};

class CudaFp8QuantLayoutTest : public CudaFp8QuantTest,
                               public ::testing::WithParamInterface<RoutedLayout> {};

TEST_P(CudaFp8QuantLayoutTest, GatheredTokenCodesEqualRoutedRowQuantization) {
  // cols 1000: a ragged last block; the routed rows over 37 tokens (each token several times),
  // of which the first used x 64 are in use.
  const int64_t tokens = 37, cols = 1000, cols_pad = 1024;
  const auto [rows, rows_pad, used] = GetParam();
  const int64_t used_unit = 64, used_rows = used * used_unit;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<uint16_t> x(tokens * cols);
  for (uint16_t& v : x) v = F32ToBf16(normal(rng));
  std::vector<int32_t> token_of(rows);
  for (int32_t& t : token_of) t = static_cast<int32_t>(rng() % tokens);

  DeviceBuffer dx(x.data(), x.size() * 2), drows(token_of.data(), rows * 4);
  DeviceBuffer dused(&used, 4);
  for (bool ue8m0 : {false, true}) {
    SCOPED_TRACE(ue8m0 ? "ue8m0 scales" : "f32 scales");
    // Routed rows one by one, into poisoned outputs.
    DeviceBuffer want_q(rows_pad * cols_pad), want_s(cols_pad / 128 * rows_pad * 4);
    ASSERT_EQ(cudaMemset(want_q.get<void>(), 0x7f, rows_pad * cols_pad), cudaSuccess);
    ASSERT_EQ(cudaMemset(want_s.get<void>(), 0xff, cols_pad / 128 * rows_pad * 4), cudaSuccess);
    kernels::QuantizeActivationsParams direct{dx.get<void>(), cols, rows, cols, rows_pad,
                                              cols_pad, want_q.get<uint8_t>(),
                                              want_s.get<float>(), ue8m0};
    direct.x_rows = drows.get<int32_t>();
    direct.used_count = dused.get<int32_t>();
    direct.used_unit = used_unit;
    kernels::QuantizeActivations(direct, nullptr);
    // Tokens once, then gathered into poisoned outputs.
    DeviceBuffer tq(tokens * cols_pad), ts(cols_pad / 128 * tokens * 4);
    kernels::QuantizeActivations({dx.get<void>(), cols, tokens, cols, tokens, cols_pad,
                                  tq.get<uint8_t>(), ts.get<float>(), ue8m0},
                                 nullptr);
    DeviceBuffer got_q(rows_pad * cols_pad), got_s(cols_pad / 128 * rows_pad * 4);
    ASSERT_EQ(cudaMemset(got_q.get<void>(), 0x7f, rows_pad * cols_pad), cudaSuccess);
    ASSERT_EQ(cudaMemset(got_s.get<void>(), 0xff, cols_pad / 128 * rows_pad * 4), cudaSuccess);
    kernels::GatherQuantizedRowsParams gather{tq.get<uint8_t>(), ts.get<float>(), tokens,
                                              drows.get<int32_t>(), rows, cols_pad,
                                              got_q.get<uint8_t>(), got_s.get<float>(),
                                              rows_pad};
    gather.used_count = dused.get<int32_t>();
    gather.used_unit = used_unit;
    kernels::GatherQuantizedRows(gather, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

    std::vector<uint8_t> wq(rows_pad * cols_pad), gq(rows_pad * cols_pad);
    std::vector<uint32_t> ws(cols_pad / 128 * rows_pad), gs(cols_pad / 128 * rows_pad);
    ASSERT_EQ(cudaMemcpy(wq.data(), want_q.get<void>(), wq.size(), cudaMemcpyDeviceToHost),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(gq.data(), got_q.get<void>(), gq.size(), cudaMemcpyDeviceToHost),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(ws.data(), want_s.get<void>(), ws.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(gs.data(), got_s.get<void>(), gs.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    int64_t code_diffs = 0, scale_diffs = 0, gathered_past_use = 0, quantized_past_use = 0;
    for (int64_t r = 0; r < rows_pad; ++r) {
      for (int64_t c = 0; c < cols_pad; ++c) {
        const uint8_t g = gq[r * cols_pad + c], w = wq[r * cols_pad + c];
        if (r < used_rows) {
          code_diffs += g != w ? 1 : 0;
        } else {
          gathered_past_use += g != 0x7f ? 1 : 0;
          quantized_past_use += w != 0x7f ? 1 : 0;
        }
      }
      for (int64_t kb = 0; kb < cols_pad / 128; ++kb) {
        const uint32_t g = gs[kb * rows_pad + r], w = ws[kb * rows_pad + r];
        if (r < used_rows) {
          scale_diffs += g != w ? 1 : 0;
        } else {
          gathered_past_use += g != 0xffffffffu ? 1 : 0;
          quantized_past_use += w != 0xffffffffu ? 1 : 0;
        }
      }
    }
    EXPECT_EQ(code_diffs, 0) << "of " << used_rows * cols_pad;
    EXPECT_EQ(scale_diffs, 0) << "of " << used_rows * cols_pad / 128;
    EXPECT_EQ(gathered_past_use, 0);
    EXPECT_EQ(quantized_past_use, 0);
  }
}

// 208 padded rows: QuantizeActivations' warp-per-block kernel; 1152 (from 512 on): its runs.
INSTANTIATE_TEST_SUITE_P(Layouts, CudaFp8QuantLayoutTest,
                         ::testing::Values(RoutedLayout{200, 208, 2},
                                           RoutedLayout{1100, 1152, 12}));

}  // namespace
}  // namespace dsv3
