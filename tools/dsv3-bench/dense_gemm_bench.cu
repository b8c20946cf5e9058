// Checks and times the small-M FP8 GEMM of kernels/moe_grouped.cu on its own (needs only
// libcudart): DenseFp8Gemm at the DeepSeek-V3 decode linears (M = 1, 4, 8, 16 rows) against a
// naive F64 device reference, then timed with events over back-to-back launches, once on one
// weight copy (L2 may serve part of it) and once rotating through copies totalling over 4x the
// 50 MB L2 (HBM reads). GB/s counts weight and scale bytes; "% copy" is against a 1 GB
// device-to-device cudaMemcpy timed in the same run (read + write bytes). Last, GroupedFp8Gemm at
// the decode MoE shapes (batches 1, 8, 32 and 128, top-8 of 256 experts, uniform routing, and
// at 32 and 128 skewed as the random model's; beyond 8, each expert's chunks of 8 rows in the
// same blocks and as blocks of their own: GroupedFp8GemmParams::chunks), which shares the
// kernel. With
// --sweep-ksplit, each timed launch again at every K split the kernel allows (the params'
// ksplit), to check the launch rule's choice (LaunchMmaGemm) against the best one.
//
// Built as dsv3-dense-gemm-bench with the CUDA backend (tools/CMakeLists.txt), or by hand from
// the repository root:
//   nvcc -gencode arch=compute_90a,code=sm_90a -std=c++17 -O3 -I. \
//     tools/dsv3-bench/dense_gemm_bench.cu kernels/moe_grouped.cu kernels/moe_align.cu \
//     kernels/launch.cu -o dense_gemm_bench
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <utility>
#include <vector>

#include "engine/backend/dtype.h"
#include "kernels/launch_check.h"
#include "kernels/moe_grouped.cuh"
#include "tools/dsv3-bench/cuda_timing.cuh"
#include "tools/dsv3-bench/fp8_bench_data.cuh"

namespace {

using dsv3::Bf16ToF32;
using dsv3::bench::CopyGbs;
using dsv3::bench::FillScales;
using dsv3::bench::Fp8;
using dsv3::bench::Hash;
using dsv3::bench::TimeUs;
using dsv3::kernels::DenseFp8Gemm;
using dsv3::kernels::DenseFp8GemmParams;
using dsv3::kernels::GroupedFp8Gemm;
using dsv3::kernels::GroupedFp8GemmParams;
using dsv3::kernels::GroupedWeight;

// q [rows, k_pad]: for columns < k, e4m3 of a bell-shaped value in [-306, 306] (the sum of four
// uniforms), as block-quantized weights and activations look; else 0 (the padding the kernel
// assumes).
__global__ void FillCodes(uint8_t* q, int64_t rows, int64_t k_pad, int64_t k, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * k_pad;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint32_t h = Hash(i, seed);
    const float v = ((h & 255) + (h >> 8 & 255) + (h >> 16 & 255) + (h >> 24) - 510.0f) * 0.6f;
    q[i] = i % k_pad < k ? __nv_fp8_e4m3(v).__x : 0;
  }
}

// out[r * cols + i] = y[r, col[i]] per the header's formula, in F64.
__global__ void Reference(DenseFp8GemmParams p, const int64_t* col, int64_t cols, double* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= p.rows * cols) return;
  const int64_t r = i / cols, c = col[i % cols];
  double acc = 0;
  for (int64_t kb = 0; kb < p.k_pad / 128; ++kb) {
    double part = 0;
    for (int64_t k = kb * 128; k < kb * 128 + 128; ++k) {
      part += Fp8(p.xq[r * p.k_pad + k]) * Fp8(p.w.w[c * p.k_pad + k]);
    }
    acc += part * p.xs[kb * p.rows_padded + r] * p.w.s[c / 128 * p.scale_stride + kb];
  }
  out[i] = acc;
}

uint32_t g_seed = 1;
double g_copy_gbs = 0;  // device-to-device copy bandwidth, GB/s

void Fill(uint8_t* q, int64_t rows, int64_t k_pad, int64_t k) {
  FillCodes<<<4096, 256>>>(q, rows, k_pad, k, g_seed++);
  DSV3_CUDA_CHECK_LAUNCH();
}

void FillS(float* s, int64_t count, float lo, float hi) {
  FillScales<<<256, 256>>>(s, count, lo, hi, g_seed++);
  DSV3_CUDA_CHECK_LAUNCH();
}

void MeasureCopy() {
  g_copy_gbs = CopyGbs();
  std::printf("device-to-device copy of 1 GiB: %.1f GB/s (read + write)\n", g_copy_gbs);
}

struct Shape {
  const char* name;
  int64_t n, k;
  bool time;
};

bool g_all_ok = true;
bool g_sweep_ksplit = false;

// With --sweep-ksplit: `time(ksplit)` (us) at every split the kernel allows for k_pad, on one
// line after the launch's own.
template <typename TimeAt>
void PrintKsplitSweep(int64_t k_pad, TimeAt time) {
  if (!g_sweep_ksplit) return;
  std::printf("    forced K split:");
  for (int ksplit = 1; ksplit <= std::min<int64_t>(16, k_pad / 256); ksplit *= 2) {
    std::printf("  %d: %.2f us", ksplit, time(ksplit));
  }
  std::printf("\n");
}

void RunDense(const Shape& sh) {
  const int64_t k_pad = (sh.k + 127) / 128 * 128, n_pad = (sh.n + 15) / 16 * 16;
  const int64_t sblocks = (sh.n + 127) / 128, scale_stride = k_pad / 128;
  const int64_t w_bytes = n_pad * k_pad, s_count = sblocks * scale_stride;
  // Copies to rotate through: over 200 MB in all, so that every launch reads HBM.
  const int64_t copies = sh.time ? (int64_t{200} << 20) / (sh.n * k_pad) + 1 : 1;
  uint8_t* wq;
  float* ws;
  DSV3_CUDA_CHECK(cudaMalloc(&wq, copies * w_bytes));
  DSV3_CUDA_CHECK(cudaMalloc(&ws, copies * s_count * 4));
  Fill(wq, copies * n_pad, k_pad, sh.k);
  FillS(ws, copies * s_count, 0.5e-3f, 1.5e-3f);
  const double gbytes = (sh.n * k_pad + s_count * 4.0) * 1e-9;
  for (const int64_t m : {1, 4, 8, 16}) {
    const int64_t rows_padded = (m + 15) / 16 * 16;
    uint8_t* xq;
    float* xs;
    uint16_t* y;
    DSV3_CUDA_CHECK(cudaMalloc(&xq, rows_padded * k_pad));
    DSV3_CUDA_CHECK(cudaMalloc(&xs, scale_stride * rows_padded * 4));
    DSV3_CUDA_CHECK(cudaMalloc(&y, m * sh.n * 2));
    Fill(xq, rows_padded, k_pad, sh.k);
    FillS(xs, scale_stride * rows_padded, 0.5e-2f, 1.5e-2f);
    DSV3_CUDA_CHECK(cudaMemset(y, 0xff, m * sh.n * 2));
    DenseFp8GemmParams p{xq,   xs,           m, rows_padded, k_pad, {wq, ws},
                         sh.n, scale_stride, y, sh.n,        false};
    DenseFp8Gemm(p, nullptr);
    // Check: every column when few, else 509 spread ones and the last; per row, the largest
    // error over the row's RMS.
    std::vector<int64_t> col;
    for (int64_t c = 0; c < sh.n; c += std::max<int64_t>(1, sh.n / 509)) col.push_back(c);
    if (col.back() != sh.n - 1) col.push_back(sh.n - 1);
    const int64_t cols = static_cast<int64_t>(col.size());
    int64_t* d_col;
    double* d_ref;
    DSV3_CUDA_CHECK(cudaMalloc(&d_col, cols * 8));
    DSV3_CUDA_CHECK(cudaMalloc(&d_ref, m * cols * 8));
    DSV3_CUDA_CHECK(cudaMemcpy(d_col, col.data(), cols * 8, cudaMemcpyHostToDevice));
    Reference<<<(m * cols + 127) / 128, 128>>>(p, d_col, cols, d_ref);
    DSV3_CUDA_CHECK_LAUNCH();
    std::vector<double> ref(m * cols);
    std::vector<uint16_t> got(m * sh.n);
    DSV3_CUDA_CHECK(cudaMemcpy(ref.data(), d_ref, m * cols * 8, cudaMemcpyDeviceToHost));
    DSV3_CUDA_CHECK(cudaMemcpy(got.data(), y, m * sh.n * 2, cudaMemcpyDeviceToHost));
    // Per output: |got - ref| within BF16's half ulp of ref (2^-9 of |ref| rounded up to its
    // binade: 2^-8 |ref| bounds it) plus 1e-3 of the row's RMS for the accumulation order.
    // worst: the largest error over that bound; 1 or less passes.
    double worst = 0;
    int64_t worst_r = 0, worst_i = 0;
    for (int64_t r = 0; r < m; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < cols; ++i) ss += ref[r * cols + i] * ref[r * cols + i];
      const double rms = std::sqrt(ss / cols);
      for (int64_t i = 0; i < cols; ++i) {
        const double v = Bf16ToF32(got[r * sh.n + col[i]]), want = ref[r * cols + i];
        const double bound = std::ldexp(std::fabs(want), -8) + 1e-3 * rms;
        const double e = std::isfinite(v) ? std::fabs(v - want) / bound : INFINITY;
        if (e > worst) worst = e, worst_r = r, worst_i = i;
      }
    }
    const bool ok = worst <= 1;
    if (!ok) {
      std::printf("  worst: row %ld column %ld got %.6g want %.6g\n", worst_r, col[worst_i],
                  Bf16ToF32(got[worst_r * sh.n + col[worst_i]]), ref[worst_r * cols + worst_i]);
    }
    g_all_ok = g_all_ok && ok;
    DSV3_CUDA_CHECK(cudaFree(d_col));
    DSV3_CUDA_CHECK(cudaFree(d_ref));

    double hot = 0, hbm = 0;
    if (sh.time) {
      const int iters = std::max(20, static_cast<int>(4.0 / gbytes));  // ~4 GB read
      hot = TimeUs(10, iters, [&](int) { DenseFp8Gemm(p, nullptr); });
      hbm = TimeUs(copies, iters, [&](int i) {
        DenseFp8GemmParams q = p;
        q.w = {wq + i % copies * w_bytes, ws + i % copies * s_count};
        DenseFp8Gemm(q, nullptr);
      });
    }
    const double gbs = hbm > 0 ? gbytes / hbm * 1e6 : 0;
    std::printf(
        "%-22s %5ld x %5ld  M %2ld  err/bound %.2f %-4s  L2-warm %7.2f us  HBM %7.2f us  "
        "%6.0f GB/s  %5.1f%% copy\n",
        sh.name, sh.n, sh.k, m, worst, ok ? "OK" : "FAIL", hot, hbm, gbs, 100 * gbs / g_copy_gbs);
    if (sh.time) {
      PrintKsplitSweep(k_pad, [&](int ksplit) {
        const int iters = std::max(20, static_cast<int>(4.0 / gbytes));
        return TimeUs(copies, iters, [&](int i) {
          DenseFp8GemmParams q = p;
          q.w = {wq + i % copies * w_bytes, ws + i % copies * s_count};
          q.ksplit = ksplit;
          DenseFp8Gemm(q, nullptr);
        });
      });
    }
    DSV3_CUDA_CHECK(cudaFree(xq));
    DSV3_CUDA_CHECK(cudaFree(xs));
    DSV3_CUDA_CHECK(cudaFree(y));
  }
  DSV3_CUDA_CHECK(cudaFree(wq));
  DSV3_CUDA_CHECK(cudaFree(ws));
}

// Each token's top_k distinct experts: uniform (skew 0), or skewed, the expert of hotness rank
// r (a random order of the experts) drawn with weight 1 / (r + 1)^skew (top_k of log weight +
// Gumbel noise: sampling without replacement). Top-8 of 256 at skew 0.9 with the bench's seed
// activates 47, 120 and 216 experts at 8, 32 and 128 tokens (the random model: 43, 113 and 213,
// docs/perf/h200.md), 87 rows on the hottest expert at 128.
std::vector<int32_t> RouteTokens(int64_t tokens, int64_t experts, int64_t top_k, double skew,
                                 std::mt19937& rng) {
  std::vector<int32_t> order(experts), ids(tokens * top_k);
  for (int32_t e = 0; e < experts; ++e) order[e] = e;
  std::shuffle(order.begin(), order.end(), rng);
  std::uniform_real_distribution<double> uniform(1e-12, 1.0);
  std::vector<std::pair<double, int32_t>> keys(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < experts; ++r) {
      keys[r] = {-skew * std::log(r + 1.0) - std::log(-std::log(uniform(rng))), order[r]};
    }
    std::partial_sort(keys.begin(), keys.begin() + top_k, keys.end(), std::greater<>());
    for (int64_t i = 0; i < top_k; ++i) ids[t * top_k + i] = keys[i].second;
  }
  return ids;
}

// Decode MoE: `tokens` tokens routed by RouteTokens, through MoeAlign; weights [experts][mats]
// of n x k (7.5 GB for gate|up: no L2 reuse across launches). chunked: MoeAlign's chunks passed
// on to the GEMM.
void RunGrouped(const char* name, int64_t tokens, double skew, int64_t n, int64_t k,
                int64_t mats, bool chunked) {
  const int64_t experts = 256, top_k = 8, entries = tokens * top_k, kb = k / 128;
  const int64_t max_chunks = dsv3::kernels::MaxGroupedChunks(entries, experts);
  std::mt19937 rng(11);
  const std::vector<int32_t> ids = RouteTokens(tokens, experts, top_k, skew, rng);
  int32_t *d_ids, *begin, *active, *num_active, *token_of, *row_of;
  int32_t *chunk_begin, *chunk_expert, *num_chunks;
  DSV3_CUDA_CHECK(cudaMalloc(&d_ids, entries * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&begin, (experts + 1) * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&active, experts * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&num_active, 4));
  DSV3_CUDA_CHECK(cudaMalloc(&token_of, entries * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&row_of, entries * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&chunk_begin, (experts + 1) * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&chunk_expert, max_chunks * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&num_chunks, 4));
  DSV3_CUDA_CHECK(cudaMemcpy(d_ids, ids.data(), entries * 4, cudaMemcpyHostToDevice));
  dsv3::kernels::MoeAlignParams align{
      d_ids, entries, top_k, 0, experts, begin, active, num_active, token_of, row_of, nullptr};
  align.chunks = {chunk_begin, chunk_expert, num_chunks, max_chunks};
  dsv3::kernels::MoeAlign(align, nullptr);
  uint8_t *wq, *xq;
  float *ws, *xs;
  void* y;
  GroupedWeight* table;
  const int64_t mat_bytes = n * k, s_count = (n + 127) / 128 * kb, total = experts * mats;
  DSV3_CUDA_CHECK(cudaMalloc(&wq, total * mat_bytes));
  DSV3_CUDA_CHECK(cudaMalloc(&ws, total * s_count * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&xq, entries * k));
  DSV3_CUDA_CHECK(cudaMalloc(&xs, kb * entries * 4));
  DSV3_CUDA_CHECK(cudaMalloc(&y, entries * mats * n * 2));
  DSV3_CUDA_CHECK(cudaMalloc(&table, total * sizeof(GroupedWeight)));
  Fill(wq, total * n, k, k);
  FillS(ws, total * s_count, 0.5e-3f, 1.5e-3f);
  Fill(xq, entries, k, k);
  FillS(xs, kb * entries, 0.5e-2f, 1.5e-2f);
  std::vector<GroupedWeight> host(total);
  for (int64_t i = 0; i < total; ++i) host[i] = {wq + i * mat_bytes, ws + i * s_count};
  DSV3_CUDA_CHECK(
      cudaMemcpy(table, host.data(), total * sizeof(GroupedWeight), cudaMemcpyHostToDevice));
  int32_t act = 0;
  DSV3_CUDA_CHECK(cudaMemcpy(&act, num_active, 4, cudaMemcpyDeviceToHost));
  GroupedFp8GemmParams p{xq,    xs,   entries, k,    begin, active, num_active, experts,
                         table, mats, 0,       mats, n,     kb,     y,          mats * n};
  p.max_rows_per_group = tokens;  // each token's experts are distinct
  if (chunked) p.chunks = align.chunks;
  const double us = TimeUs(5, 50, [&](int) { GroupedFp8Gemm(p, nullptr); });
  const double gbs = act * mats * (mat_bytes + s_count * 4.0) / us * 1e-3;
  const char* form = tokens <= 8 ? "one chunk an expert"
                     : chunked   ? "chunks as blocks"
                                 : "chunks in one block";
  std::printf(
      "grouped %-14s %ld tokens (%s), %d active experts x %ld x %ld x %ld, %s: %7.2f us  "
      "%6.0f GB/s  %5.1f%% copy\n",
      name, tokens, skew > 0 ? "skewed" : "uniform", act, mats, n, k, form, us, gbs,
      100 * gbs / g_copy_gbs);
  PrintKsplitSweep(k, [&](int ksplit) {
    GroupedFp8GemmParams q = p;
    q.ksplit = ksplit;
    return TimeUs(5, 50, [&](int) { GroupedFp8Gemm(q, nullptr); });
  });
  for (void* ptr :
       {static_cast<void*>(d_ids), static_cast<void*>(begin), static_cast<void*>(active),
        static_cast<void*>(num_active), static_cast<void*>(token_of), static_cast<void*>(row_of),
        static_cast<void*>(wq), static_cast<void*>(ws), static_cast<void*>(xq),
        static_cast<void*>(xs), y, static_cast<void*>(table), static_cast<void*>(chunk_begin),
        static_cast<void*>(chunk_expert), static_cast<void*>(num_chunks)}) {
    DSV3_CUDA_CHECK(cudaFree(ptr));
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--sweep-ksplit") == 0) {
      g_sweep_ksplit = true;
    } else {
      std::fprintf(stderr, "usage: %s [--sweep-ksplit]\n", argv[0]);
      return 2;
    }
  }
  MeasureCopy();
  const std::vector<Shape> shapes = {
      {"ragged", 200, 256, false},
      {"ragged k", 200, 500, false},
      {"q_a", 1536, 7168, true},
      {"kv_a", 576, 7168, true},
      {"q_b", 24576, 1536, true},
      {"o_proj", 7168, 16384, true},
      {"shared gate|up", 4096, 7168, true},
      {"shared down", 7168, 2048, true},
      {"dense gate|up", 36864, 7168, true},
      {"dense down", 7168, 18432, true},
  };
  for (const Shape& sh : shapes) RunDense(sh);
  // Uniform routing at 1-128 tokens, then the random model's skew at 32 and 128.
  for (const auto& [tokens, skew] : std::vector<std::pair<int64_t, double>>{
           {1, 0.0}, {8, 0.0}, {32, 0.0}, {128, 0.0}, {32, 0.9}, {128, 0.9}}) {
    // Beyond 8 tokens, each expert's chunks in the same blocks, then as blocks of their own.
    for (bool chunked : {false, true}) {
      if (tokens <= 8 && chunked) continue;
      RunGrouped("gate|up", tokens, skew, 2048, 7168, 2, chunked);
      RunGrouped("down", tokens, skew, 7168, 2048, 1, chunked);
    }
  }
  std::printf("%s\n", g_all_ok ? "all checks OK" : "SOME CHECKS FAILED");
  return g_all_ok ? 0 : 1;
}
