// Checks and times kernels/fp8_grouped_gemm.cu on its own (needs only libcudart): random e4m3
// inputs on the device, a naive device reference (F64 over the same codes and scales), then the
// DeepSeek-V3 prefill shapes (4096 tokens, top-8 of 256 experts, Poisson(128) rows per expert,
// each padded to 64-row tiles; and gate|up under uneven routing like a random model's,
// Gamma(0.5) rows per expert) timed with events: median of 15 after 3 warm-ups. Every problem
// runs with its weights row-major and k-block-major (kernels/weight_layout.cuh; the engine's
// routed experts), one after the other. --v3: the timed problems only; --checks: the untimed
// ones only; --v3 --once: one checked launch per layout, untimed (for Nsight Compute).
//
// Built as dsv3-grouped-gemm-bench with the CUDA backend (tools/CMakeLists.txt), or by hand
// from the repository root:
//   nvcc -gencode arch=compute_90a,code=sm_90a -std=c++17 -O3 -I. \
//     tools/dsv3-bench/grouped_gemm_bench.cu kernels/fp8_grouped_gemm.cu kernels/tensor_map.cu \
//     kernels/weight_layout.cu kernels/launch.cu -o grouped_gemm_bench
//   ./grouped_gemm_bench
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/fp8_grouped_gemm.cuh"
#include "kernels/launch_check.h"
#include "kernels/weight_layout.cuh"
#include "tools/dsv3-bench/fp8_bench_data.cuh"

namespace {

using dsv3::bench::FillScales;
using dsv3::bench::Fp8;
using dsv3::bench::Hash;
using dsv3::kernels::Fp8GroupedGemm;
using dsv3::kernels::Fp8GroupedGemmParams;
using dsv3::kernels::GroupedWeight;
using dsv3::kernels::kGroupedTileRows;
using dsv3::kernels::ToKBlockMajor;
using dsv3::kernels::WeightRowsPadded;

// q [rows, k_pad]: random finite e4m3 codes for k < k and rows whose row_real flag is set, else 0.
__global__ void FillCodes(uint8_t* q, int64_t rows, int64_t k_pad, int64_t k,
                          const uint8_t* row_real, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * k_pad;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / k_pad, c = i % k_pad;
    uint8_t b = static_cast<uint8_t>(Hash(i, seed) >> 7);
    if ((b & 0x7f) == 0x7f) b ^= 1;  // NaN codes
    q[i] = (c < k && (row_real == nullptr || row_real[r])) ? b : 0;
  }
}

// out[i] = y[r, m * n + c] of sample i (r, column m * n + c) per the header's formula, in F64,
// from row-major weights.
__global__ void Reference(Fp8GroupedGemmParams p, const int64_t* samples, int64_t count,
                          const int32_t* tile_expert, const GroupedWeight* weights,
                          double* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= count) return;
  const int64_t r = samples[2 * i], col = samples[2 * i + 1], m = col / p.n, c = col % p.n;
  const GroupedWeight w =
      weights[tile_expert[r / kGroupedTileRows] * p.weights_stride + p.first + m];
  double acc = 0;
  for (int64_t kb = 0; kb < p.k_pad / 128; ++kb) {
    double part = 0;
    for (int64_t k = kb * 128; k < kb * 128 + 128; ++k) {
      part += Fp8(p.xq[r * p.k_pad + k]) * Fp8(w.w[c * p.k_pad + k]);
    }
    acc += part * p.xs[kb * p.rows_padded + r] * w.s[c / 128 * p.scale_stride + kb];
  }
  out[i] = acc;
}

float ReadOut(const std::vector<uint16_t>& bf, const std::vector<float>& f, bool f32, int64_t o) {
  if (f32) return f[o];
  const uint32_t bits = static_cast<uint32_t>(bf[o]) << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

struct Problem {
  const char* name;
  std::vector<int64_t> expert_rows;  // routed rows per expert
  int64_t n, k, mats;
  bool y_f32;
  int64_t y_extra;    // y_stride = mats * n + y_extra (columns past must stay untouched)
  int64_t samples;    // 0: check every output
  bool time;
};

uint32_t g_seed = 1;

// timed = false: the checking launch only (one per layout, e.g. for Nsight Compute).
void Run(const Problem& pb, bool timed, std::mt19937& rng) {
  const int64_t experts = static_cast<int64_t>(pb.expert_rows.size());
  const int64_t k_pad = (pb.k + 511) / 512 * 512, kb = k_pad / 128;
  std::vector<int32_t> tile_expert;
  std::vector<uint8_t> row_real;
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t tiles = (pb.expert_rows[e] + kGroupedTileRows - 1) / kGroupedTileRows;
    for (int64_t t = 0; t < tiles; ++t) {
      tile_expert.push_back(static_cast<int32_t>(e));
      for (int64_t r = 0; r < kGroupedTileRows; ++r) {
        row_real.push_back(t * kGroupedTileRows + r < pb.expert_rows[e]);
      }
    }
  }
  const int64_t num_tiles = static_cast<int64_t>(tile_expert.size());
  const int64_t rows = num_tiles * kGroupedTileRows;
  const int64_t n_pad = WeightRowsPadded(pb.n), sblocks = (pb.n + 127) / 128;
  const int64_t scale_stride = (pb.k + 127) / 128;
  const int64_t weights_stride = pb.mats + 1, first = 1;  // a slot before and after: as V3's 3
  const int64_t y_stride = pb.mats * pb.n + pb.y_extra, esize = pb.y_f32 ? 4 : 2;

  uint8_t *xq, *wq, *wkb, *d_real;
  float *xs, *ws;
  int32_t* d_tiles;
  GroupedWeight *d_table, *d_table_kbm;
  void* y;
  const int64_t mat_bytes = n_pad * k_pad, mats_total = experts * pb.mats;
  const int64_t table_bytes = experts * weights_stride * sizeof(GroupedWeight);
  DSV3_CUDA_CHECK(cudaMalloc(&xq, std::max<int64_t>(rows * k_pad, 16)));
  DSV3_CUDA_CHECK(cudaMalloc(&xs, std::max<int64_t>(kb * rows, 1) * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&wq, mats_total * mat_bytes));
  DSV3_CUDA_CHECK(cudaMalloc(&wkb, mats_total * mat_bytes));
  DSV3_CUDA_CHECK(cudaMalloc(&ws, mats_total * sblocks * scale_stride * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&d_real, std::max<int64_t>(rows, 1)));
  DSV3_CUDA_CHECK(cudaMalloc(&d_tiles, std::max<int64_t>(num_tiles, 1) * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&d_table, table_bytes));
  DSV3_CUDA_CHECK(cudaMalloc(&d_table_kbm, table_bytes));
  DSV3_CUDA_CHECK(cudaMalloc(&y, std::max<int64_t>(rows * y_stride * esize, 16)));
  DSV3_CUDA_CHECK(cudaMemcpy(d_real, row_real.data(), rows, cudaMemcpyHostToDevice));
  DSV3_CUDA_CHECK(cudaMemcpy(d_tiles, tile_expert.data(), num_tiles * 4, cudaMemcpyHostToDevice));
  // The row-major table (the reference reads it too) and the same codes k-block-major in wkb.
  std::vector<GroupedWeight> table(experts * weights_stride, GroupedWeight{nullptr, nullptr});
  std::vector<GroupedWeight> table_kbm = table;
  for (int64_t e = 0; e < experts; ++e) {
    for (int64_t m = 0; m < pb.mats; ++m) {
      const int64_t i = e * pb.mats + m, slot = e * weights_stride + first + m;
      const float* s = ws + i * sblocks * scale_stride;
      table[slot] = {wq + i * mat_bytes, s};
      table_kbm[slot] = {wkb + i * mat_bytes, s, true};
    }
  }
  DSV3_CUDA_CHECK(cudaMemcpy(d_table, table.data(), table_bytes, cudaMemcpyHostToDevice));
  DSV3_CUDA_CHECK(cudaMemcpy(d_table_kbm, table_kbm.data(), table_bytes, cudaMemcpyHostToDevice));
  FillCodes<<<1024, 256>>>(xq, rows, k_pad, pb.k, d_real, g_seed++);
  FillCodes<<<4096, 256>>>(wq, mats_total * n_pad, k_pad, pb.k, nullptr, g_seed++);
  FillScales<<<256, 256>>>(xs, kb * rows, 0.5e-2f, 1.5e-2f, g_seed++);
  FillScales<<<256, 256>>>(ws, mats_total * sblocks * scale_stride, 0.5e-3f, 1.5e-3f, g_seed++);
  DSV3_CUDA_CHECK_LAUNCH();
  for (int64_t i = 0; i < mats_total; ++i) {
    ToKBlockMajor(wq + i * mat_bytes, pb.n, k_pad, wkb + i * mat_bytes, nullptr);
  }

  const Fp8GroupedGemmParams p_row{xq,    xs,         rows,    k_pad,        d_tiles,
                                   num_tiles, d_table, weights_stride, first, pb.mats,
                                   pb.n,  scale_stride, y,     y_stride,     pb.y_f32};
  // The reference at every output (or random samples); every column past mats * n must stay
  // poisoned.
  std::vector<int64_t> samples;
  if (pb.samples == 0) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < pb.mats * pb.n; ++c) samples.insert(samples.end(), {r, c});
    }
  } else {
    std::uniform_int_distribution<int64_t> ur(0, rows - 1), uc(0, pb.mats * pb.n - 1);
    for (int64_t i = 0; i < pb.samples; ++i) samples.insert(samples.end(), {ur(rng), uc(rng)});
  }
  const int64_t count = static_cast<int64_t>(samples.size()) / 2;
  std::vector<double> ref(count);
  if (count > 0) {
    int64_t* d_samples;
    double* d_ref;
    DSV3_CUDA_CHECK(cudaMalloc(&d_samples, count * 16));
    DSV3_CUDA_CHECK(cudaMalloc(&d_ref, count * 8));
    DSV3_CUDA_CHECK(cudaMemcpy(d_samples, samples.data(), count * 16, cudaMemcpyHostToDevice));
    Reference<<<(count + 127) / 128, 128>>>(p_row, d_samples, count, d_tiles, d_table, d_ref);
    DSV3_CUDA_CHECK_LAUNCH();
    DSV3_CUDA_CHECK(cudaMemcpy(ref.data(), d_ref, count * 8, cudaMemcpyDeviceToHost));
    DSV3_CUDA_CHECK(cudaFree(d_samples));
    DSV3_CUDA_CHECK(cudaFree(d_ref));
  }

  // Row-major weights, then k-block-major (the engine's routed experts).
  for (const bool kbm : {false, true}) {
    Fp8GroupedGemmParams p = p_row;
    p.weights = kbm ? d_table_kbm : d_table;
    const char* layout = kbm ? "k-block-major" : "row-major";
    DSV3_CUDA_CHECK(cudaMemset(y, 0xff, std::max<int64_t>(rows * y_stride * esize, 16)));
    Fp8GroupedGemm(p, nullptr);
    DSV3_CUDA_CHECK(cudaDeviceSynchronize());
    double err = 0;
    int64_t outside_written = 0;
    if (count > 0) {
      std::vector<uint16_t> ybf(pb.y_f32 ? 0 : rows * y_stride);
      std::vector<float> yf(pb.y_f32 ? rows * y_stride : 0);
      DSV3_CUDA_CHECK(cudaMemcpy(pb.y_f32 ? static_cast<void*>(yf.data()) : ybf.data(), y,
                                 rows * y_stride * esize, cudaMemcpyDeviceToHost));
      double num = 0, den = 0;
      for (int64_t i = 0; i < count; ++i) {
        const float got =
            ReadOut(ybf, yf, pb.y_f32, samples[2 * i] * y_stride + samples[2 * i + 1]);
        const double d = std::isfinite(got) ? got - ref[i] : INFINITY;
        num += d * d;
        den += ref[i] * ref[i];
      }
      err = std::sqrt(num / den);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = pb.mats * pb.n; c < y_stride; ++c) {
          outside_written += !std::isnan(ReadOut(ybf, yf, pb.y_f32, r * y_stride + c));
        }
      }
    }
    const bool ok = err < (pb.y_f32 ? 5e-4 : 4e-3) && outside_written == 0;
    std::printf("%-26s %-13s tiles %4ld n %5ld k %5ld mats %ld %s: rel err %.2e outside %ld %s\n",
                pb.name, layout, num_tiles, pb.n, pb.k, pb.mats, pb.y_f32 ? "f32 " : "bf16", err,
                outside_written, ok ? "OK" : "FAIL");

    if (!pb.time || !timed) continue;
    cudaEvent_t a, b;
    DSV3_CUDA_CHECK(cudaEventCreate(&a));
    DSV3_CUDA_CHECK(cudaEventCreate(&b));
    std::vector<float> ms;
    for (int i = 0; i < 18; ++i) {
      DSV3_CUDA_CHECK(cudaEventRecord(a));
      Fp8GroupedGemm(p, nullptr);
      DSV3_CUDA_CHECK(cudaEventRecord(b));
      DSV3_CUDA_CHECK(cudaEventSynchronize(b));
      float t;
      DSV3_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
      if (i >= 3) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double us = ms[ms.size() / 2] * 1e3;
    const double flops = 2.0 * rows * pb.mats * pb.n * k_pad;
    std::printf("fp8 grouped gemm %s %s (rows %ld, N %ld x %ld, K %ld): %.1f us, %.1f TFLOP/s "
                "(min %.1f us)\n",
                pb.name, layout, rows, pb.mats, pb.n, k_pad, us, flops / us * 1e-6, ms[0] * 1e3);
    DSV3_CUDA_CHECK(cudaEventDestroy(a));
    DSV3_CUDA_CHECK(cudaEventDestroy(b));
  }
  for (void* ptr : {static_cast<void*>(xq), static_cast<void*>(xs), static_cast<void*>(wq),
                    static_cast<void*>(wkb), static_cast<void*>(ws), static_cast<void*>(d_real),
                    static_cast<void*>(d_tiles), static_cast<void*>(d_table),
                    static_cast<void*>(d_table_kbm), y}) {
    DSV3_CUDA_CHECK(cudaFree(ptr));
  }
}

}  // namespace

int main(int argc, char** argv) {
  // The flags: see the top of this file. Lines go out as printed (a run cut short keeps them).
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const bool only_v3 = argc > 1 && std::strcmp(argv[1], "--v3") == 0;
  const bool only_checks = argc > 1 && std::strcmp(argv[1], "--checks") == 0;
  const bool once = argc > 2 && std::strcmp(argv[2], "--once") == 0;
  std::mt19937 rng(7);
  std::vector<int64_t> v3_rows(256);
  std::poisson_distribution<int64_t> poisson(128);
  for (int64_t& r : v3_rows) r = poisson(rng);
  // Uneven routing like the random model's: Gamma(0.5) rows per expert (mean 128, many small).
  std::vector<int64_t> skewed_rows(256);
  std::gamma_distribution<double> gamma(0.5, 256.0);
  for (int64_t& r : skewed_rows) r = static_cast<int64_t>(gamma(rng));
  const std::vector<Problem> problems = {
      {"ragged n=200 k=500 gate|up", {0, 64, 130, 1, 200}, 200, 500, 2, false, 8, 0, false},
      {"ragged n=200 f32", {0, 64, 130, 1, 200}, 200, 500, 2, true, 8, 0, false},
      {"n=576 k=7168 f32", {70, 0, 128}, 576, 7168, 1, true, 0, 0, false},
      {"n=64 one tile", {10}, 64, 1000, 2, true, 4, 0, false},
      {"n=129 odd", {0, 65, 3}, 129, 512, 2, false, 3, 0, false},
      {"n=129 odd f32", {0, 65, 3}, 129, 512, 2, true, 3, 0, false},
      // Experts of 1, 2, 0, 3, 1 and 5 tiles; column blocks over two matrices.
      {"tiles 1-5 n=256 f32", {64, 128, 0, 192, 1, 300}, 256, 1024, 2, true, 8, 0, false},
      {"tiles 1-4 n=768 bf16", {130, 64, 250}, 768, 512, 2, false, 0, 0, false},
      {"v3 gate|up small", {100, 64, 0, 300}, 2048, 7168, 2, false, 0, 200000, false},
      {"v3 down small", {100, 0, 200}, 7168, 2048, 1, false, 0, 200000, false},
      {"v3 gate|up", v3_rows, 2048, 7168, 2, false, 0, 20000, true},
      {"v3 down", v3_rows, 7168, 2048, 1, false, 0, 20000, true},
      {"v3 gate|up skewed", skewed_rows, 2048, 7168, 2, false, 0, 20000, true},
  };
  for (const Problem& pb : problems) {
    if ((!only_v3 || pb.time) && (!only_checks || !pb.time)) Run(pb, !once, rng);
  }
  return 0;
}
