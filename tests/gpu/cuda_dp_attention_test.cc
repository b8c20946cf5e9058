// Data-parallel attention with expert parallelism (--dp-attention) on the CUDA backend.
//  - One GPU: the expert-parallel MoE (engine/model/expert_parallel_moe.h) over a one-rank NCCL
//    communicator (the device collectives the GPU path uses, every row sent to this rank itself)
//    equals the backend's plain MoeExperts bit for bit: the owner runs MoeExperts on the same
//    rows in the same order, and ScatterSumRows adds one partial per token to zero, which is
//    exact. Tokens 0 (an idle rank), decode and prefill sizes (small-M and tiled grouped
//    kernels), FP8 and BF16 experts; both dispatch layouts (the fixed-capacity one also padded:
//    PadRows, the AllGathers and SumRowBlocks on the device). The whole model (prefill, then
//    eager decode steps) loaded with dp_attention on that communicator gives the plain model's
//    logits bit for bit too, in either layout, with the shared expert run apart in both (the
//    fused shared expert is a plain-MoE-only path). Decode steps through ForwardDataParallel with
//    a decode graph runner (padded to the graph shape, C = its rows, then measured, captured and
//    replayed with the MoE layers' NCCL collectives inside the graph) equal the same padded steps
//    run eagerly on a backend without graphs bit for bit.
//  - Two GPUs (skipped with fewer): dsv3-generate --tp 2 --dp-attention against --tp 1 on
//    smooth-fp8. The prompt logits must agree within kMultiGpuLogitTol, the bound cuda_tp_test
//    holds --tp 2 to, and on the greedy token wherever --tp 1's top-2 margin exceeds kGreedyMargin:
//    the two differ where a step's rows are batched differently (each rank's GEMMs and attention
//    see only its own rows, and cuBLASLt and the grouped kernels pick tile shapes and splits by row
//    count), the routed partial sums are added in rank order, and the shared expert runs apart, all
//    BF16/F32 rounding-level. Several prompts spread over both ranks generate the same greedy
//    tokens as one GPU.
// ScatterSumRows, PadRows and SumRowBlocks CUDA against CPU are the op table's scatter_sum_rows_*,
// pad_rows_* and sum_row_blocks_* rows (cuda_op_table_test).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "engine/model/expert_parallel_moe.h"
#include "engine/model/graph_batch.h"
#include "engine/model/kv_cache.h"
#include "engine/model/step_graphs.h"
#include "engine/data_parallel_forward.h"
#include "engine/parallel/attention_split.h"
#include "engine/parallel/nccl/nccl_communicator.h"
#include "engine/util/npy.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/op_table.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RunCommand;
using ::dsv3::testing::TempDir;
using ::dsv3::testing::ToolPath;

// Sequence s's block table when num_seqs sequences of `blocks` blocks each take the cache's
// blocks in turn: blocks s, s + num_seqs, s + 2 num_seqs, ...
std::vector<int32_t> InterleavedBlockTable(int s, int num_seqs, int32_t blocks) {
  std::vector<int32_t> t(blocks);
  for (int32_t i = 0; i < blocks; ++i) t[i] = i * num_seqs + s;
  return t;
}

// A CUDA backend and a one-rank NCCL communicator on its stream.
class OneRankDeviceTest : public ::testing::Test {
 protected:
  void Make(CudaBackend::Options options) {
    auto gpu = CudaBackend::Create(options);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = *std::move(gpu);
    auto comm = CreateNcclCommunicator(nullptr, SingleRankCommunicator::Instance(),
                                       {.local_rank = 0, .cuda_stream = gpu_->device_stream()});
    ASSERT_TRUE(comm.ok()) << comm.status();
    comm_ = *std::move(comm);
  }
  void SetUp() override {
    DSV3_SKIP_WITHOUT_GPU();
    Make({});
  }
  void TearDown() override {
    if (gpu_) gpu_->Synchronize();
  }

  std::unique_ptr<CudaBackend> gpu_;
  std::unique_ptr<Communicator> comm_;
};

struct MoeCase {
  int64_t tokens;
  bool fp8;
  DispatchLayout layout = DispatchLayout::kCompacted;
  int64_t spare = 0;  // kFixedCapacity: C = tokens + spare
};

std::string CaseName(const MoeCase& c) {
  std::string name = "t" + std::to_string(c.tokens) + (c.fp8 ? "_fp8" : "_bf16");
  if (c.layout == DispatchLayout::kFixedCapacity) {
    name += "_fixed" + (c.spare > 0 ? "_c" + std::to_string(c.tokens + c.spare) : "");
  }
  return name;
}

// gtest prints the case by its name, not as bytes.
void PrintTo(const MoeCase& c, std::ostream* os) { *os << CaseName(c); }

class ExpertParallelMoeOneGpuTest : public OneRankDeviceTest,
                                    public ::testing::WithParamInterface<MoeCase> {};

// Compacted: the owner gets exactly the T rows, so the reference is MoeExperts over them. Fixed
// capacity: it gets the block padded to C rows (zero rows, ids -1, weights 0), and the grouped
// kernels choose their tiling by row count, so the reference is MoeExperts over that padded block
// (its first T rows): bit for bit either way.
TEST_P(ExpertParallelMoeOneGpuTest, EqualsMoeExpertsBitForBit) {
  const MoeCase c = GetParam();
  const int64_t t = c.tokens, h = 256, inter = 384, e = 8, k = 3;
  const bool fixed = c.layout == DispatchLayout::kFixedCapacity;
  const int64_t rows = fixed ? t + c.spare : t;  // the owner's rows
  std::mt19937 rng(5);
  ::dsv3::testing::OpInputs in(*gpu_, rng);
  std::vector<ExpertWeights> experts;
  for (int64_t j = 0; j < e; ++j) {
    experts.push_back(
        {in.Linear(inter, h, c.fp8), in.Linear(inter, h, c.fp8), in.Linear(h, inter, c.fp8)});
  }
  // [T, H] BF16 (an idle rank's made empty, no upload); its values, the reference's padded.
  std::vector<float> x_values = in.Values(t * h, 2.0f);
  const TensorView x = t == 0 ? in.Empty(DType::kBF16, {0, h}) : in.Activation(x_values, {t, h});
  std::vector<int32_t> id_values = ::dsv3::testing::RandomRouting(t, k, e, rng);
  std::vector<float> weight_values =
      ::dsv3::testing::PickWeights(t, k, [](int64_t j) { return 0.25f * (j + 1); });
  const TensorView ids = in.I32(id_values, t, k);
  const TensorView weights = in.F32(weight_values, t, k);
  x_values.resize(rows * h, 0.0f);
  id_values.resize(rows * k, -1);
  weight_values.resize(rows * k, 0.0f);
  const TensorView want = in.Empty(DType::kF32, {rows, h});
  const TensorView got = in.Empty(DType::kF32, {t, h});
  if (rows > 0) {
    gpu_->MoeExperts(in.Activation(x_values, {rows, h}), in.I32(id_values, rows, k),
                     in.F32(weight_values, rows, k), experts, 0, want);
  }
  const absl::Status st = ExpertParallelMoe(*gpu_, *comm_,
                                            {.x = x,
                                             .topk_ids = ids,
                                             .topk_weights = weights,
                                             .experts = experts,
                                             .expert_begin = 0,
                                             .num_experts = e,
                                             .layout = c.layout,
                                             .capacity = rows},
                                            got);
  ASSERT_TRUE(st.ok()) << st;
  std::vector<float> a = in.Host(want);
  a.resize(t * h);  // the padding rows' results are dropped
  const std::vector<float> b = in.Host(got);
  int64_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) differing += a[i] != b[i];
  EXPECT_EQ(differing, 0) << "of " << a.size() << " (relative error "
                          << ::dsv3::testing::RelError(b, a) << ")";
}

constexpr DispatchLayout kFixed = DispatchLayout::kFixedCapacity;
INSTANTIATE_TEST_SUITE_P(
    Sizes, ExpertParallelMoeOneGpuTest,
    // 0: an idle rank; 1 and 37: the small-M grouped kernel; 300: the tiled one (above
    // CudaBackend::kDefaultGroupedMoeMaxTokens); BF16 experts: the per-expert path. Fixed
    // capacity: the same, padded or not, up to C = kFixedCapacityMaxTokens (all idle: C = 0).
    ::testing::Values(MoeCase{0, true}, MoeCase{1, true}, MoeCase{37, true}, MoeCase{300, true},
                      MoeCase{37, false}, MoeCase{0, true, kFixed}, MoeCase{0, true, kFixed, 4},
                      MoeCase{1, true, kFixed}, MoeCase{37, true, kFixed},
                      MoeCase{37, true, kFixed, 5}, MoeCase{250, true, kFixed, 6},
                      MoeCase{37, false, kFixed, 3}),
    [](const auto& info) { return CaseName(info.param); });

// The byte copies the expert-parallel MoE uses for row counts and routing ids.
TEST_F(OneRankDeviceTest, ByteCopiesRoundTripEveryByte) {
  const std::vector<int64_t> counts = {0, 7, int64_t{1} << 40};
  Tensor t(gpu_->allocator(), DType::kI64, {1, 3});
  gpu_->CopyFromHost(counts.data(), t);
  std::vector<int64_t> back(3);
  gpu_->CopyToHost(t, back.data());
  EXPECT_EQ(back, counts);
}

// The whole model, eager: prefill of three prompts, then decode steps, with dp_attention on a
// one-rank NCCL communicator against the same weights loaded plainly.
class DpAttentionModelOneGpuTest : public OneRankDeviceTest {
 protected:
  // The fused shared expert runs only on the plain path; off, both run it apart.
  void SetUp() override {
    DSV3_SKIP_WITHOUT_GPU();
    Make({.fuse_shared_expert = false});
  }
};

// Param: the dp model's batches carry max_rank_tokens (their own token count, as
// SplitForAttentionRank sets it on one rank), so its MoE layers take the fixed-capacity layout
// (C = T: the owner's rows are the plain model's); false: the compacted one.
class DpAttentionModelLayoutOneGpuTest : public DpAttentionModelOneGpuTest,
                                         public ::testing::WithParamInterface<bool> {};

TEST_P(DpAttentionModelLayoutOneGpuTest, LogitsEqualThePlainModelBitForBit) {
  const bool fixed_capacity = GetParam();
  auto config = ::dsv3::testing::V3LatentDimsConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  auto plain = DeepseekV3Model::Random(*config, *gpu_, 11);
  ASSERT_TRUE(plain.ok()) << plain.status();
  auto dp = DeepseekV3Model::Random(*config, *gpu_, 11, *comm_, /*dp_attention=*/true);
  ASSERT_TRUE(dp.ok()) << dp.status();
  ASSERT_TRUE((*dp)->dp_attention());
  constexpr int32_t kBlock = 16, kSeqBlocks = 4;
  const std::vector<int32_t> lengths = {5, 23, 40};
  const int num_seqs = static_cast<int>(lengths.size());
  auto table = [&](int s) { return InterleavedBlockTable(s, num_seqs, kSeqBlocks); };
  std::vector<float> outputs[2];
  for (int which = 0; which < 2; ++which) {
    DeepseekV3Model& model = which == 0 ? **plain : **dp;
    KvCache cache(*gpu_, *config, num_seqs * kSeqBlocks, kBlock);
    auto for_model = [&](ForwardBatch batch) {
      if (which == 1 && fixed_capacity) batch.max_rank_tokens = batch.num_tokens();
      return batch;
    };
    std::vector<float> logits;
    ASSERT_TRUE(model
                    .Forward(for_model(::dsv3::testing::PromptsPrefill(lengths, table,
                                                                       config->vocab_size)),
                             cache, logits)
                    .ok());
    outputs[which] = logits;
    for (int step = 0; step < 3; ++step) {
      ForwardBatch decode;
      for (int s = 0; s < num_seqs; ++s) {
        const int32_t context = lengths[s] + step;
        decode.token_ids.push_back(::dsv3::testing::PromptToken(s, context, config->vocab_size));
        decode.sequences.push_back({s, 1, context, table(s)});
        decode.logits_rows.push_back(s);
      }
      ASSERT_TRUE(model.Forward(for_model(decode), cache, logits).ok());
      outputs[which].insert(outputs[which].end(), logits.begin(), logits.end());
    }
  }
  ASSERT_EQ(outputs[1].size(), outputs[0].size());
  int64_t differing = 0;
  for (size_t i = 0; i < outputs[0].size(); ++i) differing += outputs[0][i] != outputs[1][i];
  EXPECT_EQ(differing, 0) << "of " << outputs[0].size() << " logits (relative error "
                          << ::dsv3::testing::RelError(outputs[1], outputs[0]) << ")";
}

INSTANTIATE_TEST_SUITE_P(Layouts, DpAttentionModelLayoutOneGpuTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "fixed_capacity" : "compacted";
                         });

// A rank with no sequence in a step runs an empty batch through every layer (its MoE layers'
// exchanges included) and returns no logits.
TEST_F(DpAttentionModelOneGpuTest, AnEmptyBatchRunsEveryLayer) {
  auto config = ::dsv3::testing::V3LatentDimsConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  auto dp = DeepseekV3Model::Random(*config, *gpu_, 11, *comm_, /*dp_attention=*/true);
  ASSERT_TRUE(dp.ok()) << dp.status();
  KvCache cache(*gpu_, *config, 4, 16);
  std::vector<float> logits(3, 1.0f);
  const absl::Status st = (*dp)->Forward(ForwardBatch{}, cache, logits);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(logits.empty());
  gpu_->Synchronize();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// A CUDA backend and a dp_attention model on a one-rank NCCL communicator of its own stream.
struct DpRank {
  std::unique_ptr<CudaBackend> gpu;
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<DeepseekV3Model> model;
};

void MakeDpRank(const ModelConfig& config, CudaBackend::Options options, DpRank& rank) {
  auto gpu = CudaBackend::Create(options);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  rank.gpu = *std::move(gpu);
  auto comm = CreateNcclCommunicator(nullptr, SingleRankCommunicator::Instance(),
                                     {.local_rank = 0, .cuda_stream = rank.gpu->device_stream()});
  ASSERT_TRUE(comm.ok()) << comm.status();
  rank.comm = *std::move(comm);
  auto model = DeepseekV3Model::Random(config, *rank.gpu, 11, *rank.comm, /*dp_attention=*/true);
  ASSERT_TRUE(model.ok()) << model.status();
  rank.model = *std::move(model);
}

// --dp-attention decode steps through the graph runner: ForwardDataParallel with a
// DecodeGraphRunner pads the rank's part to its graph shape (3 sequences: 4, the MoE layers'
// capacity C = 4), measures the first step, captures the second (the fixed-capacity layout's
// PadRows, NCCL all-gathers and all-to-all, SumRowBlocks inside the graph) and replays the rest.
// Each step's logits must equal, bit for bit, the same padded step run eagerly (BeginStep and
// RunStep at the same shape and capacity) on a backend without graphs: the same kernels on the
// same rows, so any difference is the graph's (a plan or a collective read at a stale address).
TEST(DpAttentionGraphsOneGpuTest, DecodeStepsReplayTheEagerPaddedStepBitForBit) {
  DSV3_SKIP_WITHOUT_GPU();
  auto config = ::dsv3::testing::V3LatentDimsConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  DpRank graphed, eager;
  MakeDpRank(*config, {}, graphed);
  ASSERT_FALSE(HasFatalFailure());
  MakeDpRank(*config, {.cuda_graphs = false}, eager);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_NE(graphed.gpu->step_graphs(), nullptr);
  const int64_t vocab = config->vocab_size;
  constexpr int32_t kBlock = 16, kSeqBlocks = 4;
  constexpr int kDecodeSteps = 8;
  const std::vector<int32_t> lengths = {5, 23, 40};
  const int num_seqs = static_cast<int>(lengths.size());
  auto table = [&](int s) { return InterleavedBlockTable(s, num_seqs, kSeqBlocks); };
  KvCache graphed_cache(*graphed.gpu, *config, num_seqs * kSeqBlocks, kBlock);
  KvCache eager_cache(*eager.gpu, *config, num_seqs * kSeqBlocks, kBlock);
  DecodeGraphRunner runner(*graphed.model);

  // The prefill is no graph step: both run Forward (C = its 68 tokens).
  const ForwardBatch prefill = ::dsv3::testing::PromptsPrefill(lengths, table, vocab);
  std::vector<float> got, want;
  ASSERT_TRUE(
      ForwardDataParallel(*graphed.model, &runner, *graphed.comm, prefill, graphed_cache, got)
          .ok());
  ASSERT_TRUE(
      ForwardDataParallel(*eager.model, nullptr, *eager.comm, prefill, eager_cache, want).ok());
  EXPECT_EQ(got, want) << "prefill";

  for (int step = 0; step < kDecodeSteps; ++step) {
    ForwardBatch decode;
    for (int s = 0; s < num_seqs; ++s) {
      const int32_t context = lengths[s] + step;
      decode.token_ids.push_back(::dsv3::testing::PromptToken(s, context, vocab));
      decode.sequences.push_back({s, 1, context, table(s)});
      decode.logits_rows.push_back(s);
    }
    ASSERT_TRUE(
        ForwardDataParallel(*graphed.model, &runner, *graphed.comm, decode, graphed_cache, got)
            .ok())
        << "step " << step;

    // The reference: the runner's padded step, eager.
    std::vector<AttentionRankPart> parts = {SplitForAttentionRank(decode, 0)};
    const std::optional<GraphStepShape> shape = runner.DataParallelShape(parts, MlaMode::kAuto);
    ASSERT_TRUE(shape.has_value()) << "step " << step;
    EXPECT_EQ(*shape, (GraphStepShape{4, 1, 256}));
    parts[0].batch.max_rank_tokens = shape->rows();
    const ForwardBatch padded = PadForGraph(parts[0].batch, *shape, kBlock,
                                            eager_cache.scratch_block(), /*with_hidden=*/false);
    const AttentionBatch ab =
        eager.model->BeginStep(padded, eager_cache, MlaMode::kAuto, shape->context_bucket);
    Tensor logits(eager.gpu->allocator(), DType::kF32, {shape->rows(), vocab});
    ASSERT_TRUE(eager.model->RunStep(padded, ab, eager_cache, logits, TensorView()).ok());
    want.assign(num_seqs * vocab, 0.0f);
    eager.gpu->Download(logits.view().Rows(0, num_seqs), want.data());

    ASSERT_EQ(got.size(), want.size()) << "step " << step;
    int64_t differing = 0;
    for (size_t i = 0; i < want.size(); ++i) differing += got[i] != want[i];
    EXPECT_EQ(differing, 0) << "step " << step << ": of " << want.size()
                            << " logits (relative error " << ::dsv3::testing::RelError(got, want)
                            << ")";
  }
  const DecodeGraphRunner::Stats stats = runner.stats();
  std::printf("dp-attention graphs: %lld captures, %lld replays, %lld measured, %lld eager\n",
              static_cast<long long>(stats.captured), static_cast<long long>(stats.replayed),
              static_cast<long long>(stats.measured), static_cast<long long>(stats.eager));
  // One shape (4 sequences, one context bucket, C = 4): measured once (one more allowed, for
  // caches the first run fills), captured once, replayed after.
  EXPECT_EQ(stats.eager, 0);
  EXPECT_EQ(stats.captured, 1);
  EXPECT_LE(stats.measured, 2);
  EXPECT_GE(stats.replayed, kDecodeSteps - 3);
  graphed.gpu->Synchronize();
  eager.gpu->Synchronize();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  graphed.model.reset();  // the models' tensors live in their backends' memory: freed first
  eager.model.reset();
}

std::string Generate(const std::string& args) {
  return ToolPath("dsv3-generate") + " --device cuda --model " + FixturePath("smooth-fp8") + " " +
         args;
}

TEST(DpAttentionTwoGpuTest, PromptLogitsMatchOneGpu) {
  if (CudaBackend::DeviceCount() < 2) {
    GTEST_SKIP() << "fewer than two CUDA devices: the --tp 2 --dp-attention test is skipped";
  }
  TempDir dir;
  const std::string args =
      "--prompt-ids 5,77,12,99,31,8,640,3,17,250,41,9 --max-new-tokens 1 --logits-out ";
  const auto one = RunCommand(Generate(args + dir.file("tp1.npy")));
  ASSERT_TRUE(!one.signaled && one.exit_code == 0) << one.err;
  const auto dp = RunCommand(Generate(args + dir.file("dp2.npy") + " --tp 2 --dp-attention"));
  ASSERT_TRUE(!dp.signaled && dp.exit_code == 0) << dp.err;
  auto want = ReadNpyF32(dir.file("tp1.npy"));
  auto got = ReadNpyF32(dir.file("dp2.npy"));
  ASSERT_TRUE(want.ok() && got.ok());
  ASSERT_EQ(got->shape, want->shape);
  const double err = ::dsv3::testing::RelError(got->data, want->data);
  std::printf("dp2-tp1 relative error of the prompt logits: %.2e\n", err);
  EXPECT_LE(err, testing::kMultiGpuLogitTol);
  const int64_t vocab = want->shape[1];
  for (int64_t r = 0; r < want->shape[0]; ++r) {
    const auto [best, margin] = ::dsv3::testing::TopToken(want->data.data() + r * vocab, vocab);
    if (margin <= testing::kGreedyMargin) continue;
    EXPECT_EQ(::dsv3::testing::TopToken(got->data.data() + r * vocab, vocab).first, best)
        << "position " << r;
  }
}

// Five prompts, spread 3 and 2 over the ranks (and ranks going idle as the short ones end):
// every prompt's greedy tokens equal one GPU's.
TEST(DpAttentionTwoGpuTest, GreedyTokensOfSeveralPromptsMatchOneGpu) {
  if (CudaBackend::DeviceCount() < 2) {
    GTEST_SKIP() << "fewer than two CUDA devices: the --tp 2 --dp-attention test is skipped";
  }
  TempDir dir;
  const std::string prompts = dir.file("prompts.txt");
  {
    std::ofstream out(prompts);
    out << "918,349,723,81,739\n7,8,9\n11,12,13,14,15,16,17,18,19,20,21,22,23\n20,21\n"
           "30,31,32,33,34,35\n";
  }
  const std::string args = "--prompts-file " + prompts + " --max-new-tokens 12 --ignore-eos";
  const auto one = RunCommand(Generate(args));
  ASSERT_TRUE(!one.signaled && one.exit_code == 0) << one.err;
  const auto dp = RunCommand(Generate(args + " --tp 2 --dp-attention"));
  ASSERT_TRUE(!dp.signaled && dp.exit_code == 0) << dp.err;
  EXPECT_NE(dp.err.find("on each of 2 attention ranks"), std::string::npos) << dp.err;
  EXPECT_EQ(dp.out, one.out);
}

}  // namespace
}  // namespace dsv3
