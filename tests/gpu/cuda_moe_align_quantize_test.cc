// kernels::MoeAlignQuantize (decode-sized MoE steps: the routed rows aligned expert by expert and
// quantized in one launch) against the two kernels it replaces, MoeAlign then
// QuantizeActivations gathering by token_of. Rows inside an expert may come in another order
// (MoeAlign's follows its atomics, the fused kernel's the entries'), so the check goes by entry:
// the same expert ranges, active experts and counts, each local entry's row inside its expert's
// range holding its token's codes and scales with the reference's bits, every row of the layout
// taken once, and the rows past the local ones and the padding rows as the reference writes them.
// Cases: V3's decode (256 experts and the shared one, top 8, 1 and 8 tokens), ragged columns,
// rows whose stride rules out 8-byte loads, experts held by another rank (expert parallelism),
// the most entries the kernel takes, and 1024 experts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/fp8_quant.cuh"
#include "kernels/moe_grouped.cuh"
#include "tests/gpu/gpu_test_util.h"
#include "tests/moe_routing_util.h"

namespace dsv3 {
namespace {

using testing::CopyIn;
using testing::CopyOut;
using testing::RandomBf16;
using testing::RandomRouting;

struct AlignCase {
  std::string name;
  int64_t tokens, top_k;
  int64_t global_experts, expert_begin, local_experts;  // local: routed experts on this rank
  bool shared;
  int64_t cols, x_stride;
};

// The outputs of one alignment and quantization, on the host.
struct Layout {
  std::vector<int32_t> begin, active, num_active, token_of, row_of, active_log;
  std::vector<uint8_t> q;
  std::vector<float> scales;
};

class CudaMoeAlignQuantizeTest : public testing::GpuTest {
 protected:
  // Runs the fused kernel (fused) or MoeAlign and QuantizeActivations, outputs poisoned first.
  Layout Run(const AlignCase& c, const Tensor& ids, const Tensor& x, bool fused) {
    const int64_t local = c.local_experts + (c.shared ? 1 : 0);
    const int64_t routed = c.tokens * c.top_k, entries = routed + (c.shared ? c.tokens : 0);
    const int64_t rows_pad = (entries + 3) / 4 * 4, k_pad = (c.cols + 511) / 512 * 512;
    Tensor begin = DevEmpty(DType::kI32, 1, local + 1), active = DevEmpty(DType::kI32, 1, local);
    Tensor num_active = DevEmpty(DType::kI32, 1, 1), log = DevEmpty(DType::kI32, 1, 1);
    Tensor token_of = DevEmpty(DType::kI32, 1, entries);
    Tensor row_of = DevEmpty(DType::kI32, 1, entries);
    Tensor q = DevEmpty(DType::kU8, rows_pad, k_pad);
    Tensor s = DevEmpty(DType::kF32, k_pad / 128, rows_pad);
    kernels::MoeAlignParams align{ids.ptr<int32_t>(),        routed,
                                  c.top_k,                   c.expert_begin,
                                  local,                     begin.ptr<int32_t>(),
                                  active.ptr<int32_t>(),     num_active.ptr<int32_t>(),
                                  token_of.ptr<int32_t>(),   row_of.ptr<int32_t>(),
                                  log.ptr<int32_t>()};
    if (c.shared) align.shared_expert = local - 1;
    kernels::QuantizeActivationsParams quantize{
        x.view().data, c.x_stride, entries,         c.cols, rows_pad,
        k_pad,         q.ptr<uint8_t>(), s.ptr<float>(), false};
    if (fused) {
      kernels::MoeAlignQuantize(align, quantize, gpu_->stream());
    } else {
      kernels::MoeAlign(align, gpu_->stream());
      quantize.x_rows = token_of.ptr<int32_t>();
      kernels::QuantizeActivations(quantize, gpu_->stream());
    }
    Layout out{std::vector<int32_t>(local + 1), std::vector<int32_t>(local),
               std::vector<int32_t>(1),         std::vector<int32_t>(entries),
               std::vector<int32_t>(entries),   std::vector<int32_t>(1),
               std::vector<uint8_t>(rows_pad * k_pad),
               std::vector<float>(k_pad / 128 * rows_pad)};
    CopyOut(*gpu_, begin, out.begin.data());
    CopyOut(*gpu_, active, out.active.data());
    CopyOut(*gpu_, num_active, out.num_active.data());
    CopyOut(*gpu_, log, out.active_log.data());
    CopyOut(*gpu_, token_of, out.token_of.data());
    CopyOut(*gpu_, row_of, out.row_of.data());
    CopyOut(*gpu_, q, out.q.data());
    CopyOut(*gpu_, s, out.scales.data());
    return out;
  }

  std::mt19937 rng_{77};
};

TEST_F(CudaMoeAlignQuantizeTest, GivesTheLayoutAndBitsOfMoeAlignThenQuantize) {
  const std::vector<AlignCase> cases = {
      {"v3 decode, 1 token", 1, 8, 256, 0, 256, true, 7168, 7168},
      {"v3 decode, 8 tokens", 8, 8, 256, 0, 256, true, 7168, 7168},
      {"ragged columns", 5, 6, 64, 0, 64, true, 1000, 1000},
      {"stride without 8-byte loads", 3, 4, 32, 0, 32, false, 300, 301},
      {"experts on another rank", 6, 8, 64, 16, 16, true, 640, 640},
      {"most entries", 28, 8, 256, 0, 256, false, 512, 512},
      {"1024 experts", 2, 8, 1023, 0, 1023, true, 256, 256},
  };
  for (const AlignCase& c : cases) {
    SCOPED_TRACE(c.name);
    const int64_t local = c.local_experts + (c.shared ? 1 : 0);
    const int64_t routed = c.tokens * c.top_k, entries = routed + (c.shared ? c.tokens : 0);
    const int64_t rows_pad = (entries + 3) / 4 * 4, k_pad = (c.cols + 511) / 512 * 512;
    ASSERT_LE(rows_pad, kernels::kMoeAlignQuantizeMaxEntries);
    const std::vector<int32_t> host_ids = RandomRouting(c.tokens, c.top_k, c.global_experts, rng_);
    Tensor ids(gpu_->allocator(), DType::kI32, {routed});
    CopyIn(*gpu_, ids, host_ids.data());
    Tensor x = Dev(RandomBf16(c.tokens * c.x_stride, rng_, 3.0f), c.tokens, c.x_stride);
    const Layout want = Run(c, ids, x, /*fused=*/false);
    const Layout got = Run(c, ids, x, /*fused=*/true);

    EXPECT_EQ(got.begin, want.begin);
    EXPECT_EQ(got.num_active, want.num_active);
    EXPECT_EQ(got.active_log, want.active_log);
    ASSERT_GE(want.num_active[0], 0);
    for (int32_t a = 0; a < want.num_active[0]; ++a) {
      EXPECT_EQ(got.active[a], want.active[a]) << "active slot " << a;
    }
    // Row r of a layout, codes then scales.
    auto row_bits = [&](const Layout& l, int64_t r) {
      std::vector<float> bits(l.q.begin() + r * k_pad, l.q.begin() + (r + 1) * k_pad);
      for (int64_t kb = 0; kb < k_pad / 128; ++kb) bits.push_back(l.scales[kb * rows_pad + r]);
      return bits;
    };
    const int32_t local_rows = want.begin[local];
    std::set<int32_t> rows_taken;
    std::vector<int32_t> last_row(local, -1);  // each expert's last row so far
    for (int64_t i = 0; i < entries; ++i) {
      const int64_t e = i < routed ? host_ids[i] - c.expert_begin : local - 1;
      const int64_t token = i < routed ? i / c.top_k : i - routed;
      if (e < 0 || e >= local) {
        EXPECT_EQ(got.row_of[i], -1) << "entry " << i << " of another rank's expert";
        continue;
      }
      const int32_t r = got.row_of[i];
      ASSERT_GE(r, got.begin[e]) << "entry " << i;
      ASSERT_LT(r, got.begin[e + 1]) << "entry " << i;
      EXPECT_GT(r, last_row[e]) << "entry " << i << ": rows inside an expert in entry order";
      last_row[e] = r;
      EXPECT_TRUE(rows_taken.insert(r).second) << "row " << r << " taken twice";
      EXPECT_EQ(got.token_of[r], token) << "row " << r;
      EXPECT_EQ(row_bits(got, r), row_bits(want, want.row_of[i])) << "entry " << i;
    }
    EXPECT_EQ(static_cast<int32_t>(rows_taken.size()), local_rows);
    // Past the local rows: token 0's codes (rows of the layout), then padding (q 0, scale 1).
    for (int64_t r = local_rows; r < rows_pad; ++r) {
      if (r < entries) {
        EXPECT_EQ(got.token_of[r], 0) << "row " << r;
      }
      EXPECT_EQ(row_bits(got, r), row_bits(want, r)) << "row " << r;
    }
  }
}

}  // namespace
}  // namespace dsv3
