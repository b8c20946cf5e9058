// The prefill FP8 grouped GEMM (kernels/fp8_grouped_gemm.cu) against a host F64 reference
// computed from the same e4m3 codes and scales, so only summation order, the tensor cores' FP8
// accumulation inside each 128-k block and output rounding differ. Outputs are poisoned (NaN)
// first; columns of y past mats * n must stay poisoned. Shapes: ragged N (not a multiple of the
// kernel's 256-column items, odd N), experts with no rows and with several tiles, a single tile,
// gate|up side by side (mats = 2) and the DeepSeek-V3 expert sizes. Timing of the V3 prefill
// shapes is tools/dsv3-bench/grouped_gemm_bench.cu's job. The SwiGLU output (down's quantized
// input written by gate|up's launch) is checked bit for bit against the launches it replaces.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/dtype.h"
#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/fp8_quant.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace dsv3 {
namespace {

using testing::DeviceBuffer;

using kernels::Fp8GroupedGemm;
using kernels::Fp8GroupedGemmParams;
using kernels::GroupedWeight;
using kernels::kGroupedTileRows;

// BF16 output: its rounding (2^-9) dominates. F32 output: the tensor cores accumulate each
// 128-k block of FP8 products at reduced precision (measured 2.1e-4 on H200, the same for every
// shape), before the F32 promotion.
constexpr double kBf16Tol = 4e-3;
constexpr double kF32Tol = 5e-4;

struct Case {
  std::string name;
  std::vector<int64_t> expert_rows;  // routed rows of each local expert
  int64_t n, k, mats;
  bool y_f32;
  int64_t y_extra;    // y_stride = mats * n + y_extra
  int64_t row_step;   // the reference covers rows 0, row_step, 2 row_step, ... (host time)
};

// Finite e4m3 codes (0x7f / 0xff are NaN).
uint8_t RandomCode(std::mt19937& rng) {
  const uint8_t b = static_cast<uint8_t>(rng());
  return (b & 0x7f) == 0x7f ? b ^ 1 : b;
}

// One problem's operands on the host and the device: tiles of 64 rows expert by expert (rows
// past an expert's count are padding: zero codes), xq [rows, k_pad], xs [kblocks, rows], and per
// matrix i = e * mats + m weights [RoundUp(n, 16), k_pad] with scales [n / 128 up,
// scale_stride]; the table has a slot before and after each expert's matrices (as the engine's
// gate, up, down do).
struct Problem {
  int64_t k_pad, kblocks, tiles, rows, n_pad, sblocks, scale_stride, weights_stride, first = 1;
  std::vector<int32_t> tile_expert;
  std::vector<uint8_t> xq, wq;
  std::vector<float> xs, ws;
  std::unique_ptr<DeviceBuffer> d_xq, d_xs, d_wq, d_ws, d_tiles, d_table;

  Problem(const Case& c, std::mt19937& rng) {
    const int64_t experts = static_cast<int64_t>(c.expert_rows.size());
    k_pad = (c.k + 511) / 512 * 512;
    kblocks = k_pad / 128;
    std::vector<bool> real;  // [rows]
    for (int64_t e = 0; e < experts; ++e) {
      for (int64_t r0 = 0; r0 < c.expert_rows[e]; r0 += kGroupedTileRows) {
        tile_expert.push_back(static_cast<int32_t>(e));
        for (int64_t r = r0; r < r0 + kGroupedTileRows; ++r) real.push_back(r < c.expert_rows[e]);
      }
    }
    tiles = static_cast<int64_t>(tile_expert.size());
    rows = tiles * kGroupedTileRows;
    xq.assign(rows * k_pad, 0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < c.k && real[r]; ++k) xq[r * k_pad + k] = RandomCode(rng);
    }
    std::uniform_real_distribution<float> ux(0.5e-2f, 1.5e-2f), uw(0.5e-3f, 1.5e-3f);
    xs.resize(kblocks * rows);
    for (float& s : xs) s = ux(rng);
    n_pad = (c.n + 15) / 16 * 16;
    sblocks = (c.n + 127) / 128;
    scale_stride = (c.k + 127) / 128;
    weights_stride = c.mats + 2;
    const int64_t mats_total = experts * c.mats;
    wq.assign(mats_total * n_pad * k_pad, 0);
    for (int64_t i = 0; i < mats_total; ++i) {
      for (int64_t r = 0; r < c.n; ++r) {
        for (int64_t k = 0; k < c.k; ++k) wq[(i * n_pad + r) * k_pad + k] = RandomCode(rng);
      }
    }
    ws.resize(mats_total * sblocks * scale_stride);
    for (float& s : ws) s = uw(rng);
    d_xq = std::make_unique<DeviceBuffer>(xq.data(), xq.size());
    d_xs = std::make_unique<DeviceBuffer>(xs.data(), xs.size() * 4);
    d_wq = std::make_unique<DeviceBuffer>(wq.data(), wq.size());
    d_ws = std::make_unique<DeviceBuffer>(ws.data(), ws.size() * 4);
    d_tiles = std::make_unique<DeviceBuffer>(tile_expert.data(), tiles * 4);
    std::vector<GroupedWeight> table(experts * weights_stride, GroupedWeight{nullptr, nullptr});
    for (int64_t e = 0; e < experts; ++e) {
      for (int64_t m = 0; m < c.mats; ++m) {
        const int64_t i = e * c.mats + m;
        table[e * weights_stride + first + m] = {d_wq->get<uint8_t>() + i * n_pad * k_pad,
                                                 d_ws->get<float>() + i * sblocks * scale_stride};
      }
    }
    d_table = std::make_unique<DeviceBuffer>(table.data(), table.size() * sizeof(GroupedWeight));
  }

  Fp8GroupedGemmParams Params(const Case& c, void* y, int64_t y_stride) {
    return {d_xq->get<uint8_t>(), d_xs->get<float>(), rows, k_pad, d_tiles->get<int32_t>(), tiles,
            d_table->get<GroupedWeight>(), weights_stride, first, c.mats, c.n, scale_stride, y,
            y_stride, c.y_f32};
  }
};

class CudaFp8GroupedGemmTest : public testing::GpuTest {
 protected:
  void Check(const Case& c) {
    Problem pr(c, rng_);
    const int64_t rows = pr.rows, k_pad = pr.k_pad, kblocks = pr.kblocks;
    const int64_t y_stride = c.mats * c.n + c.y_extra, esize = c.y_f32 ? 4 : 2;
    DeviceBuffer d_y(rows * y_stride * esize);
    ASSERT_EQ(cudaMemset(d_y.get<void>(), 0xff, rows * y_stride * esize), cudaSuccess);

    Fp8GroupedGemm(pr.Params(c, d_y.get<void>(), y_stride), nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint8_t> y_raw(rows * y_stride * esize);
    ASSERT_EQ(cudaMemcpy(y_raw.data(), d_y.get<void>(), y_raw.size(), cudaMemcpyDeviceToHost),
              cudaSuccess);
    auto y_at = [&](int64_t r, int64_t col) {
      const int64_t o = r * y_stride + col;
      if (c.y_f32) return reinterpret_cast<const float*>(y_raw.data())[o];
      return Bf16ToF32(reinterpret_cast<const uint16_t*>(y_raw.data())[o]);
    };

    std::vector<float> lut(256);
    for (int b = 0; b < 256; ++b) lut[b] = Fp8E4M3ToF32(static_cast<uint8_t>(b));
    std::vector<float> got, want;
    for (int64_t r = 0; r < rows; r += c.row_step) {
      const int64_t e = pr.tile_expert[r / kGroupedTileRows];
      for (int64_t m = 0; m < c.mats; ++m) {
        const int64_t i = e * c.mats + m;
        for (int64_t col = 0; col < c.n; ++col) {
          double acc = 0;
          for (int64_t kb = 0; kb < kblocks; ++kb) {
            double part = 0;
            const uint8_t* xr = &pr.xq[r * k_pad + kb * 128];
            const uint8_t* wr = &pr.wq[(i * pr.n_pad + col) * k_pad + kb * 128];
            for (int k = 0; k < 128; ++k) part += static_cast<double>(lut[xr[k]]) * lut[wr[k]];
            acc += part * pr.xs[kb * rows + r] *
                   pr.ws[(i * pr.sblocks + col / 128) * pr.scale_stride + kb];
          }
          want.push_back(static_cast<float>(acc));
          got.push_back(y_at(r, m * c.n + col));
        }
      }
    }
    int64_t outside = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t col = c.mats * c.n; col < y_stride; ++col) outside += !std::isnan(y_at(r, col));
    }
    const double err = testing::RelError(got, want);
    std::printf("fp8 grouped gemm %s (tiles %ld, n %ld, k %ld, mats %ld, %s): rel err %.2e\n",
                c.name.c_str(), pr.tiles, c.n, c.k, c.mats, c.y_f32 ? "f32" : "bf16", err);
    EXPECT_LT(err, c.y_f32 ? kF32Tol : kBf16Tol) << c.name;
    EXPECT_EQ(outside, 0) << c.name << ": columns past mats * n written";
  }

  // The SwiGLU output (Fp8GroupedGemmParams::h_q) against the two launches it replaces: gate|up
  // in BF16, then QuantizeActivations with the SiLU-gate over every row. Codes and scales must
  // be the same bits everywhere in [rows, h_k_pad] (both poisoned first), h_k_pad = n rounded up
  // to 512: the blocks past n as zeros.
  void CheckSwiglu(const Case& c, bool ue8m0) {
    ASSERT_EQ(c.mats, 2);
    ASSERT_FALSE(c.y_f32);
    Problem pr(c, rng_);
    const int64_t rows = pr.rows, h_k_pad = (c.n + 511) / 512 * 512;
    DeviceBuffer d_y(rows * 2 * c.n * 2);
    Fp8GroupedGemm(pr.Params(c, d_y.get<void>(), 2 * c.n), nullptr);
    const int64_t q_bytes = rows * h_k_pad, s_bytes = h_k_pad / 128 * rows * 4;
    DeviceBuffer d_q_want(q_bytes), d_s_want(s_bytes), d_q(q_bytes), d_s(s_bytes);
    for (auto [b, bytes] : {std::pair{&d_q_want, q_bytes}, {&d_q, q_bytes}, {&d_s_want, s_bytes},
                            {&d_s, s_bytes}}) {
      ASSERT_EQ(cudaMemset(b->get<void>(), 0xab, bytes), cudaSuccess);
    }
    kernels::QuantizeActivationsParams qp{d_y.get<void>(), 2 * c.n, rows, c.n, rows, h_k_pad,
                                          d_q_want.get<uint8_t>(), d_s_want.get<float>(), ue8m0};
    qp.up = d_y.get<uint16_t>() + c.n;
    qp.up_stride = 2 * c.n;
    kernels::QuantizeActivations(qp, nullptr);
    Fp8GroupedGemmParams p = pr.Params(c, nullptr, 2 * c.n);
    p.h_q = d_q.get<uint8_t>();
    p.h_s = d_s.get<float>();
    p.h_k_pad = h_k_pad;
    p.h_ue8m0 = ue8m0;
    Fp8GroupedGemm(p, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    auto to_host = [](const DeviceBuffer& b, int64_t bytes) {
      std::vector<uint8_t> h(bytes);
      EXPECT_EQ(cudaMemcpy(h.data(), b.get<void>(), bytes, cudaMemcpyDeviceToHost), cudaSuccess);
      return h;
    };
    // Scales compared as bytes: the same bits.
    const std::vector<uint8_t> q_want = to_host(d_q_want, q_bytes), q = to_host(d_q, q_bytes);
    const std::vector<uint8_t> s_want = to_host(d_s_want, s_bytes), s = to_host(d_s, s_bytes);
    int64_t q_diff = 0, s_diff = 0;
    for (size_t i = 0; i < q.size(); ++i) q_diff += q[i] != q_want[i];
    for (size_t i = 0; i < s.size(); ++i) s_diff += s[i] != s_want[i];
    std::printf("fp8 grouped gemm swiglu %s (tiles %ld, n %ld, h_k_pad %ld, %s): %ld of %zu codes "
                "and %ld of %zu scale bytes differ\n",
                c.name.c_str(), pr.tiles, c.n, h_k_pad, ue8m0 ? "ue8m0" : "f32 scales", q_diff,
                q.size(), s_diff, s.size());
    EXPECT_EQ(q_diff, 0) << c.name;
    EXPECT_EQ(s_diff, 0) << c.name;
  }

  std::mt19937 rng_{2025};
};

TEST_F(CudaFp8GroupedGemmTest, RaggedExpertsAndColumnsMatchHostReference) {
  // Experts with 0 rows, exactly one tile, a ragged third tile, 1 row and 4 tiles; N = 200 is
  // one partial 256-column item (the second consumer half partial too), K = 500 of k_pad 512.
  // BF16 with a 16-byte row stride goes out by TMA stores: columns [192, 200) of the first
  // matrix directly (the box would cross into the second), the second's clipped at mats * n.
  // An 8-byte stride takes the direct stores throughout.
  const std::vector<int64_t> ragged = {0, 64, 130, 1, 200};
  Check({"ragged", ragged, 200, 500, 2, false, 8, 1});
  Check({"ragged 8-byte stride", ragged, 200, 500, 2, false, 4, 1});
  Check({"ragged f32", ragged, 200, 500, 2, true, 8, 1});
  // Odd N: no paired stores past the last column; odd row stride.
  Check({"odd n", {0, 65, 3}, 129, 512, 2, false, 3, 1});
  Check({"odd n f32", {0, 65, 3}, 129, 512, 2, true, 3, 1});
  // A single tile; N = 64 leaves the second consumer of every item without columns.
  Check({"one tile", {10}, 64, 1000, 2, true, 4, 1});
}

TEST_F(CudaFp8GroupedGemmTest, DeepSeekV3ShapesMatchHostReference) {
  Check({"n 576 k 7168", {70, 0, 128}, 576, 7168, 1, true, 0, 1});
  // gate|up (N 2048 x 2, K 7168) and down (N 7168, K 2048); every 7th row checked (host time).
  Check({"v3 gate|up", {100, 0, 64, 129}, 2048, 7168, 2, false, 0, 7});
  Check({"v3 down", {130, 0, 1}, 7168, 2048, 1, false, 0, 7});
}

TEST_F(CudaFp8GroupedGemmTest, SwigluOutputRaggedGivesTheQuantizationKernelsBits) {
  // Experts with 0 rows, one tile, a ragged third tile and 1 row; N = 200 leaves the second
  // 128-column block partial and h_k_pad = 512 two blocks wholly past n. Odd N. (Small enough
  // for compute-sanitizer's racecheck.)
  for (bool ue8m0 : {false, true}) {
    CheckSwiglu({"ragged", {0, 64, 130, 1, 200}, 200, 500, 2, false, 0, 1}, ue8m0);
    CheckSwiglu({"odd n", {0, 65, 3}, 129, 512, 2, false, 0, 1}, ue8m0);
  }
}

TEST_F(CudaFp8GroupedGemmTest, SwigluOutputV3GivesTheQuantizationKernelsBits) {
  CheckSwiglu({"v3 gate|up", {100, 0, 64, 129}, 2048, 7168, 2, false, 0, 1}, false);
}

}  // namespace
}  // namespace dsv3
