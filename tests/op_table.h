// The op table: every Backend op x a list of shapes x weight/output dtypes, one row each, and the
// harness that runs a row on two backends from the same inputs and compares them by normalized
// error (RelError) against the row's per-dtype tolerance. The same table runs in CI (the CPU
// against GpuEmulationBackend: tests/unit/cpu_op_table_test.cc) and on the device (the CPU
// against CUDA: tests/gpu/cuda_op_table_test.cc). Adding an op or a shape means adding a row.
//
// Inputs go to a backend only through its interface (Upload, Copy, MakeLinear, LoadDense), so a
// row runs on any backend; host values are BF16-exact, so every backend sees the same inputs.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/backend.h"
#include "engine/backend/dtype.h"
#include "engine/weights/random_tensors.h"
#include "tests/mla_batch_util.h"
#include "tests/moe_routing_util.h"

namespace dsv3::testing {

// Normalized error of one comparison: ||got - want|| / ||want|| (NaN: +inf).
inline double OpRelError(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (static_cast<double>(got[i]) - want[i]) * (got[i] - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Per-dtype thresholds (docs/cuda.md, "Numerics"): BF16 activations, FP8 activation
// quantization (against an unquantized reference), and ops that only move values.
inline constexpr double kBf16Tolerance = 1e-2;
inline constexpr double kFp8Tolerance = 6e-2;
inline constexpr double kExactTolerance = 1e-6;

struct OpRow {
  std::string name;  // op_shape_dtype, a gtest parameter name
  double tolerance;
  // Runs the op on `b` with inputs drawn from `rng` (each backend gets an rng of the same seed,
  // so the same inputs) and returns its outputs on the host as F32.
  std::function<std::vector<float>(Backend& b, std::mt19937& rng)> run;
};

// Builds a row's inputs on one backend; owns what it made until the row's run ends.
class OpInputs {
 public:
  OpInputs(Backend& b, std::mt19937& rng) : b_(b), rng_(rng) {}

  // Uniform in [-scale, scale], BF16-exact.
  std::vector<float> Values(int64_t n, float scale = 1.0f) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(n);
    for (float& x : v) x = Bf16ToF32(F32ToBf16(u(rng_)));
    return v;
  }
  // An activation tensor (the backend's activation dtype) of `shape` holding `values`.
  TensorView Activation(const std::vector<float>& values, std::initializer_list<int64_t> shape) {
    std::vector<float> host = values;
    keep_.push_back(b_.Upload(TensorView::Contiguous(host.data(), DType::kF32, shape)));
    return keep_.back();
  }
  TensorView Activation(std::initializer_list<int64_t> shape, float scale = 1.0f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return Activation(Values(n, scale), shape);
  }
  // An F32 tensor [rows, cols] (the residual stream, routing weights) holding `values`.
  TensorView F32(const std::vector<float>& values, int64_t rows, int64_t cols) {
    const TensorView act = Activation(values, {rows, cols});
    const TensorView out = Empty(DType::kF32, {rows, cols});
    b_.Copy(act, out);
    return out;
  }
  // An I32 tensor [rows, cols].
  TensorView I32(std::vector<int32_t> values, int64_t rows, int64_t cols) {
    keep_.push_back(b_.Upload(TensorView::Contiguous(values.data(), DType::kI32, {rows, cols})));
    return keep_.back();
  }
  TensorView Empty(DType dtype, std::initializer_list<int64_t> shape) {
    keep_.emplace_back(b_.allocator(), dtype, shape);
    return keep_.back();
  }
  // A linear weight [n, k]: FP8 codes of a normal with block scales (fp8), else BF16 values.
  LinearWeight Linear(int64_t n, int64_t k, bool fp8) {
    RandomTensors random(HostAllocator());
    random.MakeLinear("w", n, k, fp8, 1.0f / std::sqrt(static_cast<float>(k)), rng_());
    auto w = b_.LoadLinear(random, "w", n, k, Slice2D{}, keep_);
    if (!w.ok()) std::abort();  // a harness bug: the shapes are the table's
    return *w;
  }
  // A dense tensor as LoadDense makes it: mean + uniform in [-scale, scale].
  TensorView Dense(std::initializer_list<int64_t> shape, float mean, float scale) {
    const std::vector<int64_t> dims(shape);
    RandomTensors random(HostAllocator());
    random.MakeDense("t", dims, mean, scale, rng_());
    auto t = b_.LoadDense(random, "t", dims, keep_);
    if (!t.ok()) std::abort();
    return *t;
  }
  // `t` on the host as F32.
  std::vector<float> Host(const TensorView& t) {
    std::vector<float> v(t.numel());
    b_.Download(t, v.data());
    return v;
  }

 private:
  Backend& b_;
  std::mt19937& rng_;
  std::vector<Tensor> keep_;
};

// MLA attention rows: a step's new latents written into a paged cache of random context
// (WriteKvCache), then MlaAttention under MlaMode::kAuto, at V3's latent dims (512 + 64: the
// GPU's flash decode kernel) and at small ragged ones; decode steps of uneven contexts, a
// verify-like step (3 new tokens per sequence) and a mixed prefill step. Probabilities are
// rounded to BF16 for the weighted sum on the GPU, hence kAttentionTolerance.
inline constexpr double kAttentionTolerance = 2e-2;
struct MlaRowShape {
  const char* name;
  int64_t heads, nope, rope, v, lora;
};
inline void AddAttentionRows(std::vector<OpRow>& rows) {
  using Steps = std::vector<std::pair<int32_t, int32_t>>;  // (cached context, new tokens)
  const std::pair<const char*, Steps> steps[] = {
      {"decode", {{40, 1}, {300, 1}, {1000, 1}}},
      {"verify", {{63, 3}, {500, 3}}},
      {"prefill", {{0, 37}, {20, 5}, {16, 1}}},
  };
  for (const MlaRowShape s : {MlaRowShape{"v3dims", 16, 128, 64, 128, 512},
                              MlaRowShape{"small", 3, 24, 16, 20, 80}}) {
    for (const auto& [step_name, seqs] : steps) {
      rows.push_back({absl::StrCat("mla_", step_name, "_", s.name), kAttentionTolerance,
                      [s, seqs](Backend& b, std::mt19937& rng) {
        constexpr int32_t kBlock = 16;
        OpInputs in(b, rng);
        const int64_t kv_dim = s.lora + s.rope, qk = s.nope + s.rope;
        // Block tables: blocks handed out from the top, so no sequence's blocks are contiguous
        // in the order they are read.
        int32_t total_blocks = 0;
        for (auto [ctx, n] : seqs) total_blocks += (ctx + n + kBlock - 1) / kBlock;
        std::vector<std::vector<int32_t>> tables;
        AttentionBatch batch;
        batch.block_size = kBlock;
        batch.kv_lora_rank = s.lora;
        batch.rope_dim = s.rope;
        int32_t next = total_blocks, token = 0;
        for (auto [ctx, n] : seqs) {
          std::vector<int32_t>& t = tables.emplace_back((ctx + n + kBlock - 1) / kBlock);
          for (int32_t& id : t) id = --next;
        }
        for (size_t i = 0; i < seqs.size(); ++i) {
          const auto [ctx, n] = seqs[i];
          batch.sequences.push_back({token, n, ctx, tables[i].data(),
                                     static_cast<int32_t>(tables[i].size())});
          for (int32_t j = 0; j < n; ++j) {
            batch.positions.push_back(ctx + j);
            batch.slot_mapping.push_back(int64_t{tables[i][(ctx + j) / kBlock]} * kBlock +
                                         (ctx + j) % kBlock);
            batch.token_ids.push_back(0);
          }
          token += n;
        }
        const TensorView cache = in.Activation({total_blocks, kBlock, kv_dim});
        const TensorView latent = in.Activation({token, kv_dim});
        const TensorView q = in.Activation({token, s.heads, qk});
        const LinearWeight kv_b = in.Linear(s.heads * (s.nope + s.v), s.lora, true);
        const TensorView out = in.Empty(b.activation_dtype(), {token, s.heads * s.v});
        MlaParams p{s.heads, s.nope, s.rope, s.v, s.lora,
                    1.0f / std::sqrt(static_cast<float>(qk)), MlaMode::kAuto};
        b.BeginStep(batch);
        b.WriteKvCache(latent, batch, cache);
        b.MlaAttention(q, cache, kv_b, batch, p, out);
        return in.Host(out);
      }});
    }
  }
}

// MLA's inputs (PrepareMlaInputs) for t new tokens of one sequence at context 37: c normed, k_pe
// and q_pe rotated, the latent rows written to cache blocks handed out from the top. The
// latent, q and the whole cache are compared. At V3's dims (vector form on the GPU) and at
// small ragged ones.
inline void AddMlaInputsRows(std::vector<OpRow>& rows, int64_t t) {
  for (const MlaRowShape s : {MlaRowShape{"v3dims", 16, 128, 64, 128, 512},
                              MlaRowShape{"small", 3, 24, 16, 20, 84}}) {
    rows.push_back({absl::StrCat("mla_inputs_t", t, "_", s.name), kBf16Tolerance,
                    [s, t](Backend& b, std::mt19937& rng) {
      constexpr int32_t kBlock = 16, kContext = 37;
      OpInputs in(b, rng);
      const int64_t kv_dim = s.lora + s.rope, qk = s.nope + s.rope;
      std::vector<int32_t> table;
      const AttentionBatch batch = OneSequenceStep(t, kContext, kBlock, s.lora, s.rope, table);
      const int32_t blocks = static_cast<int32_t>(table.size());
      const std::vector<float> inv_freq = RopeInvFreq(s.rope);
      const TensorView cache = in.Activation({blocks, kBlock, kv_dim});
      const TensorView latent = in.Activation({t, kv_dim}, 3.0f);
      const TensorView q = in.Activation({t, s.heads, qk});
      const TensorView norm = in.Dense({s.lora}, 1.0f, 0.2f);
      TensorView c = latent, k_pe = latent, q_pe = q;  // as the model makes them
      c.shape[1] = s.lora;
      k_pe.data = static_cast<char*>(latent.data) + s.lora * DTypeSize(latent.dtype);
      k_pe.ndim = 3;
      k_pe.shape = {t, 1, s.rope, 0};
      k_pe.strides = {latent.strides[0], s.rope, 1, 0};
      q_pe.data = static_cast<char*>(q.data) + s.nope * DTypeSize(q.dtype);
      q_pe.shape[2] = s.rope;
      b.BeginStep(batch);
      b.PrepareMlaInputs({latent, c, k_pe, q_pe}, norm, 1e-6f, batch.positions,
                         RopeParams{inv_freq.data(), s.rope, 1.1f, true}, batch, cache);
      std::vector<float> got = in.Host(latent), q_host = in.Host(q), cache_host = in.Host(cache);
      got.insert(got.end(), q_host.begin(), q_host.end());
      got.insert(got.end(), cache_host.begin(), cache_host.end());
      return got;
    }});
  }
}

// The table. Rows M = 1, 3, 5, 100 (decode to prefill), widths not multiples of 128; M = 600
// for the elementwise ops, one FP8 / BF16 linear and one FP8 norm-linear only (the GPU's
// many-row kernel forms: norms, fused or not, and activation quantization from 512 rows).
inline std::vector<OpRow> OpTable() {
  std::vector<OpRow> rows;
  const int64_t kRows[] = {1, 3, 5, 100, 600};
  auto add = [&](std::string name, double tol, auto run) {
    rows.push_back({std::move(name), tol, run});
  };
  for (int64_t m : kRows) {
    for (int64_t d : {75, 200, 1536}) {
      const std::string shape = absl::StrCat("m", m, "_d", d);
      add("rmsnorm_" + shape, kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.F32(in.Values(m * d, 3.0f), m, d);
        const TensorView w = in.Dense({d}, 1.0f, 0.2f), out = in.Empty(DType::kF32, {m, d});
        b.RmsNorm(x, w, 1e-6f, out);
        return in.Host(out);
      });
      add("rmsnorm_in_place_" + shape, kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.Activation({m, d}, 3.0f), w = in.Dense({d}, 1.0f, 0.2f);
        b.RmsNorm(x, w, 1e-6f, x);
        return in.Host(x);
      });
      // The residual stream (F32) plus a branch, normed: both outputs compared.
      add("add_rmsnorm_" + shape, kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.F32(in.Values(m * d, 3.0f), m, d);
        const TensorView branch = in.F32(in.Values(m * d), m, d);
        const TensorView w = in.Dense({d}, 1.0f, 0.2f);
        const TensorView out = in.Empty(b.activation_dtype(), {m, d});
        b.AddRmsNorm(x, branch, w, 1e-6f, out);
        std::vector<float> got = in.Host(out), sum = in.Host(x);
        got.insert(got.end(), sum.begin(), sum.end());
        return got;
      });
      add("add_" + shape, kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView a = in.F32(in.Values(m * d), m, d), c = in.Activation({m, d});
        const TensorView out = in.Empty(DType::kF32, {m, d});
        b.Add(a, c, out);
        return in.Host(out);
      });
      add("silu_mul_" + shape, kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView g = in.Activation({m, d}, 3.0f), u = in.Activation({m, d});
        const TensorView out = in.Empty(b.activation_dtype(), {m, d});
        b.SiluMul(g, u, out);
        return in.Host(out);
      });
      add("copy_" + shape, kExactTolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.Activation({m, d}), out = in.Empty(DType::kF32, {m, d});
        b.Copy(x, out);
        return in.Host(out);
      });
      add("gather_rows_" + shape, kExactTolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.Activation({m, d});
        std::vector<int32_t> pick(m);
        for (int64_t r = 0; r < m; ++r) pick[r] = static_cast<int32_t>((r * 7 + 3) % m);
        const TensorView out = in.Empty(b.activation_dtype(), {m, d});
        b.GatherRows(x, pick, out);
        return in.Host(out);
      });
      // 2m source rows into m + 1 output rows: each half of the sources is a permutation of
      // rows 0..m-1 (7 is prime to every m here), so those take two sources each; row m none.
      add("scatter_sum_rows_" + shape, kExactTolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.F32(in.Values(2 * m * d, 3.0f), 2 * m, d);
        std::vector<int32_t> index(2 * m);
        for (int64_t r = 0; r < 2 * m; ++r) index[r] = static_cast<int32_t>((r * 7 + 2) % m);
        const TensorView out = in.Empty(DType::kF32, {m + 1, d});
        b.ScatterSumRows(x, index, out);
        return in.Host(out);
      });
      // m rows padded to m + 3: the activation rows with zeros, I32 ids with -1, F32 with -1
      // (the fixed-capacity expert-parallel dispatch's blocks).
      add("pad_rows_" + shape, kExactTolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.Activation({m, d});
        const TensorView out = in.Empty(b.activation_dtype(), {m + 3, d});
        b.PadRows(x, 0.0f, out);
        return in.Host(out);
      });
      add("pad_rows_f32_" + shape, kExactTolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.F32(in.Values(m * d), m, d);
        const TensorView out = in.Empty(DType::kF32, {m + 3, d});
        b.PadRows(x, -1.0f, out);
        return in.Host(out);
      });
      add("pad_rows_i32_" + shape, kExactTolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        std::vector<int32_t> ids(m * d);
        for (int32_t& id : ids) id = static_cast<int32_t>(rng() % 256);
        const TensorView x = in.I32(ids, m, d), out = in.Empty(DType::kI32, {m + 3, d});
        b.PadRows(x, -1.0f, out);
        std::vector<int32_t> got(out.numel());
        b.CopyToHost(out, got.data());
        return std::vector<float>(got.begin(), got.end());
      });
      // 3 blocks of m + 2 rows summed into m rows (the blocks' last two rows dropped, as the
      // fixed-capacity combine drops padding).
      add("sum_row_blocks_" + shape, kExactTolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const TensorView x = in.F32(in.Values(3 * (m + 2) * d, 3.0f), 3 * (m + 2), d);
        const TensorView out = in.Empty(DType::kF32, {m, d});
        b.SumRowBlocks(x, 3, out);
        return in.Host(out);
      });
      add("embedding_" + shape, kExactTolerance, [=](Backend& b, std::mt19937& rng) {
        OpInputs in(b, rng);
        const int64_t vocab = 50, first_row = 10;  // a shard: rows [10, 60) of the vocabulary
        const TensorView table = in.Dense({vocab, d}, 0.0f, 1.0f);
        std::vector<int32_t> ids(m);
        for (int64_t t = 0; t < m; ++t) ids[t] = static_cast<int32_t>((t * 13) % 70);
        const TensorView out = in.Empty(b.activation_dtype(), {m, d});
        b.Embedding(table, ids, first_row, out);
        return in.Host(out);
      });
    }
    const bool many = m > 100;
    for (auto [n, k] : {std::pair<int64_t, int64_t>{300, 200}, {576, 1536}, {128, 7168}}) {
      if (many && n != 300) continue;
      for (bool fp8 : {true, false}) {
        for (DType out_type : {DType::kBF16, DType::kF32}) {
          const std::string name =
              absl::StrCat("linear_", fp8 ? "fp8" : "bf16", "_m", m, "_n", n, "_k", k,
                           out_type == DType::kF32 ? "_f32out" : "");
          add(name, fp8 ? kFp8Tolerance : kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
            OpInputs in(b, rng);
            const LinearWeight w = in.Linear(n, k, fp8);
            const TensorView x = in.Activation({m, k}, 2.0f);
            const TensorView y =
                in.Empty(out_type == DType::kF32 ? DType::kF32 : b.activation_dtype(), {m, n});
            b.Linear(x, w, y);
            return in.Host(y);
          });
        }
      }
    }
    // The shared expert's down projection onto the routed experts' sum (F32): K = 200 and 1536
    // (the GPU adds in cuBLASLt's epilogue where M is past its small-M kernel and N % 64 == 0).
    for (auto [n, k] : {std::pair<int64_t, int64_t>{300, 200}, {576, 1536}}) {
      if (many && n != 300) continue;
      for (bool fp8 : {true, false}) {
        add(absl::StrCat("linear_add_", fp8 ? "fp8" : "bf16", "_m", m, "_n", n, "_k", k),
            fp8 ? kFp8Tolerance : kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
              OpInputs in(b, rng);
              const LinearWeight w = in.Linear(n, k, fp8);
              const TensorView x = in.Activation({m, k}, 2.0f);
              const TensorView y = in.F32(in.Values(m * n), m, n);
              b.LinearAdd(x, w, y);
              return in.Host(y);
            });
      }
    }
    // The attention's two uses: q_a's output normed in place and fed to q_b, and the residual
    // stream (F32) plus the last layer's branch normed into the input of q_a|kv_a. normed, y
    // and (with the add) the new residual compared.
    // At M = 600 the FP8 form at one shape: the GPU's fused norm-quantize of many rows.
    for (auto [n, k] : {std::pair<int64_t, int64_t>{300, 200}, {576, 1536}}) {
      for (bool fp8 : {true, false}) {
        if (many && (n != 576 || !fp8)) continue;
        for (bool add_branch : {false, true}) {
          const std::string name =
              absl::StrCat("rmsnorm_linear_", fp8 ? "fp8" : "bf16", "_m", m, "_n", n, "_k", k,
                           add_branch ? "_add" : "_in_place");
          add(name, fp8 ? kFp8Tolerance : kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
            OpInputs in(b, rng);
            const LinearWeight w = in.Linear(n, k, fp8);
            const TensorView g = in.Dense({k}, 1.0f, 0.2f);
            const TensorView x = add_branch ? in.F32(in.Values(m * k, 3.0f), m, k)
                                            : in.Activation({m, k}, 3.0f);
            const TensorView branch = in.F32(in.Values(m * k), m, k);
            const TensorView normed = add_branch ? in.Empty(b.activation_dtype(), {m, k}) : x;
            const TensorView y = in.Empty(b.activation_dtype(), {m, n});
            b.RmsNormLinear(x, add_branch ? &branch : nullptr, g, 1e-6f, normed, w, y);
            std::vector<float> got = in.Host(y), norm = in.Host(normed), sum = in.Host(x);
            got.insert(got.end(), norm.begin(), norm.end());
            if (add_branch) got.insert(got.end(), sum.begin(), sum.end());
            return got;
          });
        }
      }
    }
    for (bool interleaved : {true, false}) {
      add(absl::StrCat("rope_", interleaved ? "interleaved" : "halves", "_t", m),
          kBf16Tolerance, [=](Backend& b, std::mt19937& rng) {
            OpInputs in(b, rng);
            const int64_t heads = 4, dim = 64;
            std::vector<float> inv_freq(dim / 2);
            for (int64_t i = 0; i < dim / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / dim);
            const TensorView x = in.Activation({m, heads, dim});
            std::vector<int32_t> positions(m);
            for (int64_t t = 0; t < m; ++t) positions[t] = static_cast<int32_t>(t * 37 % 4000);
            b.Rope(x, positions, RopeParams{inv_freq.data(), dim, 1.2f, interleaved});
            return in.Host(x);
          });
    }
    AddMlaInputsRows(rows, m);
    add(absl::StrCat("moe_route_t", m), 1e-3, [=](Backend& b, std::mt19937& rng) {
      // Compared by the routing weights; the ids agree wherever the weights do.
      OpInputs in(b, rng);
      const int64_t h = 200, e = 64, k = 6;
      const TensorView x = in.Activation({m, h}), router = in.Dense({e, h}, 0.0f, 0.1f);
      const TensorView bias = in.Dense({e}, 0.0f, 0.05f);
      const TensorView ids = in.Empty(DType::kI32, {m, k}), w = in.Empty(DType::kF32, {m, k});
      b.MoeRoute(x, router, bias, MoeRouteParams{e, k, 8, 3, true, 2.5f}, ids, w);
      return in.Host(w);
    });
    for (int64_t expert_begin : {0, 3}) {  // all 8 experts here, or experts [3, 8)
      add(absl::StrCat("moe_experts_fp8_t", m, "_from", expert_begin), kFp8Tolerance,
          [=](Backend& b, std::mt19937& rng) {
            OpInputs in(b, rng);
            const int64_t h = 256, inter = 384, e = 8, k = 3;
            std::vector<ExpertWeights> experts;
            for (int64_t j = expert_begin; j < e; ++j) {
              experts.push_back(
                  {in.Linear(inter, h, true), in.Linear(inter, h, true), in.Linear(h, inter, true)});
            }
            const std::vector<int32_t> ids = RandomRouting(m, k, e, rng);
            const std::vector<float> weights = PickWeights(
                m, k, [](int64_t j) { return 0.25f * static_cast<float>(j + 1); });  // BF16-exact
            const TensorView x = in.Activation({m, h}, 2.0f);
            const TensorView out = in.Empty(b.activation_dtype(), {m, h});
            b.MoeExperts(x, in.I32(ids, m, k), in.F32(weights, m, k), experts, expert_begin, out);
            return in.Host(out);
          });
    }
    // The routed experts plus a shared expert of the same shapes: in one pass where the backend
    // fuses it (the GPU's grouped experts), else apart as the model runs it.
    add(absl::StrCat("moe_experts_shared_fp8_t", m), kFp8Tolerance,
        [=](Backend& b, std::mt19937& rng) {
          OpInputs in(b, rng);
          const int64_t h = 256, inter = 384, e = 8, k = 3;
          std::vector<ExpertWeights> experts;
          for (int64_t j = 0; j < e + 1; ++j) {  // the last one is the shared expert
            experts.push_back(
                {in.Linear(inter, h, true), in.Linear(inter, h, true), in.Linear(h, inter, true)});
          }
          const ExpertWeights shared = experts.back();
          experts.pop_back();
          const std::vector<int32_t> ids = RandomRouting(m, k, e, rng);
          const std::vector<float> weights = PickWeights(
              m, k, [](int64_t j) { return 0.25f * static_cast<float>(j + 1); });  // BF16-exact
          const TensorView x = in.Activation({m, h}, 2.0f);
          const TensorView out = in.Empty(b.activation_dtype(), {m, h});
          const TensorView id_view = in.I32(ids, m, k), w_view = in.F32(weights, m, k);
          if (!b.MoeExpertsWithShared(x, id_view, w_view, experts, 0, shared, out)) {
            b.MoeExperts(x, id_view, w_view, experts, 0, out);
            const TensorView gate = in.Empty(b.activation_dtype(), {m, inter});
            const TensorView up = in.Empty(b.activation_dtype(), {m, inter});
            const TensorView y = in.Empty(b.activation_dtype(), {m, h});
            b.Linear(x, shared.gate, gate);
            b.Linear(x, shared.up, up);
            b.SiluMul(gate, up, gate);
            b.Linear(gate, shared.down, y);
            b.Add(out, y, out);
          }
          return in.Host(out);
        });
  }
  AddAttentionRows(rows);
  return rows;
}

}  // namespace dsv3::testing
