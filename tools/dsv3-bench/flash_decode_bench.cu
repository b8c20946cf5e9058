// Checks and times the MLA flash decode kernel (kernels/flash_mla_decode.cu) on its own (needs
// only libcudart): first against a naive F64 device reference at a few ragged contexts (the
// parts the kernel's rule gives them, and forced ones), then timed with events over
// back-to-back launches at decode's shapes (128 heads, batches x contexts), each launch on
// another copy of the paged latent cache while the copies total under 512 MB (so short contexts
// read HBM, not L2, as a model's layers do). Reports the parts, us per launch, TFLOP/s (2 x heads
// x keys x (576 + 512) per item) and the latent bytes read once per launch against the
// device-to-device copy bandwidth measured in the same run. One item cut into parts is also
// timed without the combine kernel ("kernel us"), launched as the model's one-token steps launch
// it (defer_merge: W_UV's kernel merges the pieces there).
//
// Built as dsv3-flash-decode-bench with the CUDA backend (tools/CMakeLists.txt), or by hand from
// the repository root:
//   nvcc -gencode arch=compute_90a,code=sm_90a -std=c++17 -O3 -I. \
//     tools/dsv3-bench/flash_decode_bench.cu kernels/flash_mla_decode.cu kernels/tensor_map.cu \
//     kernels/launch.cu -o flash_decode_bench
// Usage: flash_decode_bench [--configs items:context,...] [--parts N] [--iters N]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "engine/backend/dtype.h"
#include "kernels/flash_mla_decode.cuh"
#include "kernels/launch_check.h"
#include "tools/dsv3-bench/cuda_timing.cuh"
#include "tools/dsv3-bench/fp8_bench_data.cuh"

namespace {

using dsv3::Bf16ToF32;
using dsv3::bench::CopyGbs;
using dsv3::bench::Hash;
using dsv3::bench::TimeUs;
using dsv3::kernels::FlashMlaDecode;
using dsv3::kernels::FlashMlaDecodeParams;
using dsv3::kernels::AssignFlashDecodeTiles;
using dsv3::kernels::FlashMlaDecodeParts;
using dsv3::kernels::FlashMlaDecodePartialFloats;
using dsv3::kernels::MlaGemmItem;

constexpr int kHeads = 128, kLora = 512, kRope = 64, kDim = kLora + kRope, kBlock = 64;
constexpr double kFlopsPerKeyHead = 2.0 * (kDim + kLora);

// v[i] = uniform in [-1, 1) as BF16.
__global__ void FillBf16(__nv_bfloat16* v, int64_t count, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    v[i] = __float2bfloat16((Hash(i, seed) >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
}

__device__ double Value(const __nv_bfloat16* v, int64_t i) { return __bfloat162float(v[i]); }

// Block (head, item): out[item, head, :] in F64 by the header's formula; scores in `scratch`
// [items, heads, max_context].
__global__ void Reference(FlashMlaDecodeParams p, int max_context, double* scratch,
                          double* out) {
  const int h = blockIdx.x, it = blockIdx.y;
  const MlaGemmItem item = p.items[it];
  const auto* q_lat = static_cast<const __nv_bfloat16*>(p.q_lat);
  const auto* q_pe = static_cast<const __nv_bfloat16*>(p.q_pe);
  const auto* cache = static_cast<const __nv_bfloat16*>(p.cache);
  double* s = scratch + (static_cast<int64_t>(it) * p.heads + h) * max_context;
  auto row = [&](int key) {
    return (static_cast<int64_t>(p.block_tables[item.table_offset + key / p.block_size]) *
                p.block_size +
            key % p.block_size) *
           kDim;
  };
  for (int key = threadIdx.x; key < item.context; key += blockDim.x) {
    double acc = 0;
    for (int d = 0; d < kLora; ++d) {
      acc += Value(q_lat, item.token_row * p.q_lat_token_stride + h * p.q_lat_head_stride + d) *
             Value(cache, row(key) + d);
    }
    for (int d = 0; d < kRope; ++d) {
      acc += Value(q_pe, item.token_row * p.q_pe_token_stride + h * p.q_pe_head_stride + d) *
             Value(cache, row(key) + kLora + d);
    }
    s[key] = acc * p.scale;
  }
  __syncthreads();
  double mx = -INFINITY, sum = 0;
  for (int key = 0; key < item.context; ++key) mx = fmax(mx, s[key]);
  for (int key = 0; key < item.context; ++key) sum += exp(s[key] - mx);
  for (int d = threadIdx.x; d < kLora; d += blockDim.x) {
    double acc = 0;
    for (int key = 0; key < item.context; ++key) {
      acc += exp(s[key] - mx) * Value(cache, row(key) + d);
    }
    out[(static_cast<int64_t>(it) * p.heads + h) * kLora + d] = acc / sum;
  }
}

// A paged latent cache for `copies` copies of `contexts.size()` items, their blocks in a random
// order, queries and outputs: the launch parameters of copy c by Params(c).
struct Problem {
  std::vector<int> contexts;
  int copies = 1, blocks_per_copy = 0;
  __nv_bfloat16 *cache = nullptr, *q_lat = nullptr, *q_pe = nullptr, *out = nullptr;
  int32_t* tables = nullptr;
  MlaGemmItem* items = nullptr;
  float* partial = nullptr;
  int parts = 1;

  Problem(std::vector<int> ctx, int copies_wanted, uint32_t seed)
      : contexts(std::move(ctx)), copies(copies_wanted) {
    const int n = static_cast<int>(contexts.size());
    std::vector<MlaGemmItem> host_items(n);
    for (int i = 0; i < n; ++i) {
      host_items[i] = {i, blocks_per_copy, contexts[i], 0};
      blocks_per_copy += (contexts[i] + kBlock - 1) / kBlock;
    }
    AssignFlashDecodeTiles(host_items.data(), n);
    const int64_t blocks = int64_t{blocks_per_copy} * copies;
    std::vector<int32_t> order(blocks);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(seed));
    const int64_t cache_elems = blocks * kBlock * kDim;
    DSV3_CUDA_CHECK(cudaMalloc(&cache, cache_elems * 2));
    DSV3_CUDA_CHECK(cudaMalloc(&q_lat, int64_t{n} * kHeads * kLora * 2));
    DSV3_CUDA_CHECK(cudaMalloc(&q_pe, int64_t{n} * kHeads * kRope * 2));
    DSV3_CUDA_CHECK(cudaMalloc(&out, int64_t{n} * kHeads * kLora * 2));
    DSV3_CUDA_CHECK(cudaMalloc(&tables, blocks * 4));
    DSV3_CUDA_CHECK(cudaMalloc(&items, n * sizeof(MlaGemmItem)));
    FillBf16<<<1024, 256>>>(cache, cache_elems, seed + 1);
    FillBf16<<<256, 256>>>(q_lat, int64_t{n} * kHeads * kLora, seed + 2);
    FillBf16<<<256, 256>>>(q_pe, int64_t{n} * kHeads * kRope, seed + 3);
    DSV3_CUDA_CHECK(cudaMemcpy(tables, order.data(), blocks * 4, cudaMemcpyHostToDevice));
    DSV3_CUDA_CHECK(cudaMemcpy(items, host_items.data(), n * sizeof(MlaGemmItem),
                               cudaMemcpyHostToDevice));
  }
  ~Problem() {
    for (void* ptr : {static_cast<void*>(cache), static_cast<void*>(q_lat),
                      static_cast<void*>(q_pe), static_cast<void*>(out),
                      static_cast<void*>(tables), static_cast<void*>(items),
                      static_cast<void*>(partial)}) {
      cudaFree(ptr);
    }
  }
  int MaxContext() const { return *std::max_element(contexts.begin(), contexts.end()); }
  void SetParts(int n) {
    parts = n;
    cudaFree(partial);
    partial = nullptr;
    const int64_t floats = FlashMlaDecodePartialFloats(kHeads, n);
    if (floats > 0) DSV3_CUDA_CHECK(cudaMalloc(&partial, floats * 4));
  }
  FlashMlaDecodeParams Params(int copy) const {
    FlashMlaDecodeParams p{};
    p.q_lat = q_lat;
    p.q_lat_token_stride = int64_t{kHeads} * kLora;
    p.q_lat_head_stride = kLora;
    p.q_pe = q_pe;
    p.q_pe_token_stride = int64_t{kHeads} * kRope;
    p.q_pe_head_stride = kRope;
    p.cache = cache;
    p.cache_rows = int64_t{blocks_per_copy} * copies * kBlock;
    p.block_size = kBlock;
    p.block_tables = tables + int64_t{copy} * blocks_per_copy;
    p.items = items;
    p.num_items = static_cast<int32_t>(contexts.size());
    p.heads = kHeads;
    p.scale = 1.0f / std::sqrt(192.0f);
    p.parts = parts;
    p.partial = partial;
    p.out = out;
    p.out_token_stride = int64_t{kHeads} * kLora;
    p.out_head_stride = kLora;
    return p;
  }
};

// Largest |kernel - reference| over the outputs, relative to the largest |reference|.
double CheckAgainstReference(Problem& pb) {
  const FlashMlaDecodeParams p = pb.Params(0);
  const int64_t outs = int64_t{p.num_items} * kHeads * kLora;
  double *scratch, *ref;
  DSV3_CUDA_CHECK(cudaMalloc(&scratch, int64_t{p.num_items} * kHeads * pb.MaxContext() * 8));
  DSV3_CUDA_CHECK(cudaMalloc(&ref, outs * 8));
  Reference<<<dim3(kHeads, p.num_items), 128>>>(p, pb.MaxContext(), scratch, ref);
  DSV3_CUDA_CHECK(cudaMemset(pb.out, 0xff, outs * 2));  // NaN: an unwritten output fails
  FlashMlaDecode(p, nullptr);
  DSV3_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> want(outs);
  std::vector<uint16_t> got(outs);
  DSV3_CUDA_CHECK(cudaMemcpy(want.data(), ref, outs * 8, cudaMemcpyDeviceToHost));
  DSV3_CUDA_CHECK(cudaMemcpy(got.data(), pb.out, outs * 2, cudaMemcpyDeviceToHost));
  cudaFree(scratch);
  cudaFree(ref);
  double max_err = 0, max_ref = 0;
  for (int64_t i = 0; i < outs; ++i) {
    const double g = Bf16ToF32(got[i]);
    max_err = std::isfinite(g) ? std::max(max_err, std::fabs(g - want[i])) : INFINITY;
    max_ref = std::max(max_ref, std::fabs(want[i]));
  }
  return max_err / max_ref;
}

std::vector<std::pair<int, int>> ParseConfigs(const char* text) {
  std::vector<std::pair<int, int>> configs;
  for (const char* s = text; *s;) {
    int items = 0, context = 0, used = 0;
    if (std::sscanf(s, "%d:%d%n", &items, &context, &used) != 2 || items < 1 || context < 1) {
      std::fprintf(stderr, "bad --configs entry at '%s' (want items:context,...)\n", s);
      std::exit(2);
    }
    configs.emplace_back(items, context);
    s += used;
    if (*s == ',') ++s;
  }
  return configs;
}

}  // namespace

int main(int argc, char** argv) {
  auto configs = ParseConfigs(
      "1:1024,32:1024,128:1024,1:16384,8:16384,32:16384,1:65536,8:65536,32:65536");
  int forced_parts = -1, iters = 20;  // -1: the rule's; 0: one block per item
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--configs")) {
      configs = ParseConfigs(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--parts")) {
      forced_parts = std::atoi(argv[i + 1]);
      if (forced_parts < 0 || forced_parts > dsv3::kernels::kFlashDecodeMaxParts) {
        std::fprintf(stderr, "--parts %s: want 0 (one block per item) to %d\n", argv[i + 1],
                     dsv3::kernels::kFlashDecodeMaxParts);
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--iters")) {
      iters = std::max(1, std::atoi(argv[i + 1]));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  cudaDeviceProp prop;
  DSV3_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;

  // Ragged contexts (81 tiles in all): a single key, a partial last tile, several tiles, a long
  // one cut; one block per item (0), parts holding several items, pieces with and without an
  // odd last tile, one tile per part, and more parts than tiles.
  bool ok = true;
  for (const int forced : {-1, 0, 1, 3, 17, 81, 100}) {
    Problem pb({1, 700, 64, 4097, 130}, 1, 7);
    const int parts = forced >= 0 ? forced : FlashMlaDecodeParts(5, kHeads, pb.MaxContext(), sms);
    pb.SetParts(parts);
    const double err = CheckAgainstReference(pb);
    const bool pass = err < 1e-2;
    ok = ok && pass;
    std::printf("check contexts 1,700,64,4097,130 in %d parts: max error %.2e of max |out| %s\n",
                parts, err, pass ? "ok" : "FAILED");
  }

  const double copy_gbs = CopyGbs();
  std::printf("%s, %d SMs, copy %.0f GB/s\n", prop.name, sms, copy_gbs);
  std::printf("%6s %7s %6s %10s %9s %9s %7s %10s\n", "items", "context", "parts", "us", "TFLOP/s",
              "GB/s", "% copy", "kernel us");
  for (const auto& [items, context] : configs) {
    const double bytes = static_cast<double>(items) * context * kDim * 2;
    const int copies = std::max(1, static_cast<int>(512e6 / bytes));
    Problem pb(std::vector<int>(items, context), copies, 11);
    const int parts = forced_parts >= 0 ? forced_parts
                                        : FlashMlaDecodeParts(items, kHeads, context, sms);
    pb.SetParts(parts);
    const double us =
        TimeUs(3, iters, [&](int i) { FlashMlaDecode(pb.Params(i % copies), nullptr); });
    char kernel_us[16] = "-";
    if (items == 1 && parts > 1) {
      const double alone = TimeUs(3, iters, [&](int i) {
        FlashMlaDecodeParams p = pb.Params(i % copies);
        p.defer_merge = true;
        FlashMlaDecode(p, nullptr);
      });
      std::snprintf(kernel_us, sizeof kernel_us, "%.1f", alone);
    }
    const double flops = kFlopsPerKeyHead * kHeads * items * static_cast<double>(context);
    std::printf("%6d %7d %6d %10.1f %9.1f %9.0f %7.1f %10s\n", items, context, parts, us,
                flops / us * 1e-6, bytes / us * 1e-3, 100.0 * bytes / us * 1e-3 / copy_gbs,
                kernel_us);
  }
  return ok ? 0 : 1;
}
