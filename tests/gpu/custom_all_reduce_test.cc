// The custom all-reduce (kernels/custom_all_reduce.cuh, engine/parallel/nccl/custom_all_reduce.h):
//  - on one GPU, N simulated ranks (2, 4, 8; F32 and BF16): every rank's buffers are plain
//    cudaMalloc memory and its kernel runs on a stream of its own, so the ranks run at once as on
//    N GPUs. Every rank must get the F32 sum over ranks in rank order, rounded once, bit for bit,
//    at sizes from one element to the staging buffer's, odd sizes and misaligned tensors, by
//    both algorithms, over many calls and inside replayed CUDA graphs. One rank always starts
//    last (its kernel launched 2 ms after the others'), so a rank that did not wait for the
//    others' inputs would read stale staging and fail the comparison;
//  - on two GPUs, one process per rank: CustomAllReduce over CUDA IPC against NCCL;
//  - on two GPUs end to end: dsv3-generate --tp 2 --custom-all-reduce against plain --tp 2.
// The two-GPU tests skip themselves with fewer than two GPUs.
#include "engine/parallel/nccl/custom_all_reduce.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/dtype.h"
#include "engine/parallel/nccl/nccl_communicator.h"
#include "engine/parallel/parallel_config.h"
#include "engine/parallel/rank_group.h"
#include "engine/util/npy.h"
#include "kernels/custom_all_reduce.cuh"
#include "kernels/launch_check.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using kernels::ElemType;
using kernels::PeerAllReduce;
using kernels::PeerAllReduceParams;
using kernels::PeerAllReduceSignal;

// The simulated ranks' kernels spin until every rank's kernel runs, so no two ranks' streams may
// share one of the GPU's hardware work queues (8 by default): a kernel queued there behind
// another rank's next kernel would wait for a spinning one to end. Set before CUDA makes its
// context (static initialization, before main); spawned processes inherit it.
[[maybe_unused]] const bool kQueuePerStream = setenv("CUDA_DEVICE_MAX_CONNECTIONS", "32", 1) == 0;

constexpr int64_t kStagingBytes = CustomAllReduce::kDefaultMaxBytes;
constexpr int64_t kHidden = 7168;  // DeepSeek-V3's hidden size: one decode token's all-reduce

int64_t ElemBytes(ElemType t) { return t == ElemType::kBF16 ? 2 : 4; }
DType ToDType(ElemType t) { return t == ElemType::kBF16 ? DType::kBF16 : DType::kF32; }

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// n values exactly representable in `type`, of magnitudes 2^-8 to 2^8 and both signs, so that
// summing in another order would change some results.
std::vector<float> Inputs(int64_t n, ElemType type, uint64_t seed) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t bits = Mix(seed * 0x100000001b3ull + static_cast<uint64_t>(i));
    const float unit = static_cast<float>(bits >> 40) * 0x1p-24f * 4.0f - 2.0f;
    const float x = std::ldexp(unit, static_cast<int>(bits & 15) - 8);
    v[i] = type == ElemType::kBF16 ? Bf16ToF32(F32ToBf16(x)) : x;
  }
  return v;
}

// The values as `type`'s bytes.
std::vector<char> ToBytes(const std::vector<float>& v, ElemType type) {
  std::vector<char> bytes(v.size() * ElemBytes(type));
  for (size_t i = 0; i < v.size(); ++i) {
    if (type == ElemType::kBF16) {
      const uint16_t b = F32ToBf16(v[i]);
      std::memcpy(bytes.data() + 2 * i, &b, 2);
    } else {
      std::memcpy(bytes.data() + 4 * i, &v[i], 4);
    }
  }
  return bytes;
}

// What every rank must hold: the sum over ranks in rank order, in F32, rounded once to `type`.
std::vector<char> RankOrderSum(const std::vector<std::vector<float>>& inputs, ElemType type) {
  std::vector<float> sum = inputs[0];
  for (size_t r = 1; r < inputs.size(); ++r) {
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += inputs[r][i];
  }
  return ToBytes(sum, type);
}

// Empty when equal, else the first differing element.
std::string FirstDifference(const std::vector<char>& got, const std::vector<char>& want,
                            ElemType type) {
  if (got.size() != want.size()) return absl::StrCat(got.size(), " bytes, want ", want.size());
  const int64_t elem = ElemBytes(type);
  for (size_t i = 0; i < got.size(); i += elem) {
    if (std::memcmp(got.data() + i, want.data() + i, elem) != 0) {
      uint32_t g = 0, w = 0;
      std::memcpy(&g, got.data() + i, elem);
      std::memcpy(&w, want.data() + i, elem);
      return absl::StrCat("element ", i / elem, ": bits 0x", absl::Hex(g), ", want 0x",
                          absl::Hex(w));
    }
  }
  return "";
}

std::vector<char> Download(const void* device, int64_t bytes) {
  std::vector<char> host(bytes);
  DSV3_CUDA_CHECK(cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost));
  return host;
}

// N ranks on one GPU. Grids of at most kBlocks blocks, so that all ranks' blocks are resident
// together (their spin-waits need that).
class SimulatedRanks {
 public:
  static constexpr int kBlocks = 4;

  SimulatedRanks(int world, int64_t staging_bytes)
      : world_(world), staging_bytes_(staging_bytes), ranks_(world) {
    for (Rank& r : ranks_) {
      DSV3_CUDA_CHECK(cudaMalloc(&r.staging, 2 * staging_bytes));
      DSV3_CUDA_CHECK(cudaMalloc(&r.signal, sizeof(PeerAllReduceSignal)));
      DSV3_CUDA_CHECK(cudaMemset(r.signal, 0, sizeof(PeerAllReduceSignal)));
      DSV3_CUDA_CHECK(cudaMalloc(&r.data, staging_bytes + 16));  // room for a misaligned start
      DSV3_CUDA_CHECK(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
    }
    DSV3_CUDA_CHECK(
        cudaHostAlloc(reinterpret_cast<void**>(&abort_), sizeof(uint32_t), cudaHostAllocMapped));
    *abort_ = 0;
    DSV3_CUDA_CHECK(cudaDeviceSynchronize());
  }
  ~SimulatedRanks() {
    cudaDeviceSynchronize();
    for (Rank& r : ranks_) {
      cudaFree(r.staging);
      cudaFree(r.signal);
      cudaFree(r.data);
      cudaStreamDestroy(r.stream);
    }
    cudaFreeHost(abort_);
  }

  int world() const { return world_; }
  // Copies `bytes` to rank `rank`'s data + offset on its stream (its next kernel reads them).
  void Upload(int rank, int64_t offset, const std::vector<char>& bytes) const {
    DSV3_CUDA_CHECK(cudaMemcpyAsync(data(rank, offset), bytes.data(), bytes.size(),
                                    cudaMemcpyHostToDevice, ranks_[rank].stream));
  }
  cudaStream_t stream(int rank) const { return ranks_[rank].stream; }
  // Rank `rank`'s tensor: `offset` bytes into its data buffer.
  void* data(int rank, int64_t offset = 0) const {
    return static_cast<char*>(ranks_[rank].data) + offset;
  }

  PeerAllReduceParams Params(int rank, void* data, int64_t n, ElemType type, bool two_shot) const {
    PeerAllReduceParams p{};
    p.data = data;
    p.n = n;
    p.type = type;
    p.rank = rank;
    p.world = world_;
    for (int r = 0; r < world_; ++r) {
      p.staging[r] = ranks_[r].staging;
      p.signals[r] = ranks_[r].signal;
    }
    p.staging_bytes = staging_bytes_;
    p.abort = abort_;
    p.two_shot = two_shot;
    p.max_blocks = kBlocks;
    return p;
  }

  // launch(r) for every rank, rank `late` 2 ms after the others, which are by then waiting for it.
  void LaunchAll(int late, const std::function<void(int)>& launch) const {
    for (int r = 0; r < world_; ++r) {
      if (r != late) launch(r);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    launch(late);
  }

  // Whether every rank's stream finished within `limit`. If not, the waits are aborted (so the
  // streams drain) and the ranks are unusable.
  bool Finish(absl::Duration limit = absl::Seconds(20)) {
    const absl::Time deadline = absl::Now() + limit;
    for (;;) {
      bool done = true;
      for (const Rank& r : ranks_) {
        const cudaError_t e = cudaStreamQuery(r.stream);
        if (e == cudaErrorNotReady) {
          done = false;
        } else if (e != cudaSuccess) {
          ADD_FAILURE() << "stream: " << cudaGetErrorString(e);
          return false;
        }
      }
      if (done) return true;
      if (absl::Now() > deadline) {
        ADD_FAILURE() << "the ranks did not all finish within " << limit
                      << ": a barrier that never opens, or ranks that did not run at once";
        Abort();
        return false;
      }
      absl::SleepFor(absl::Microseconds(100));
    }
  }

  // Every wait gives up; the kernels drain with undefined results.
  void Abort() {
    *static_cast<volatile uint32_t*>(abort_) = 1;
    for (const Rank& r : ranks_) cudaStreamSynchronize(r.stream);
  }

 private:
  struct Rank {
    void* staging = nullptr;
    PeerAllReduceSignal* signal = nullptr;
    void* data = nullptr;
    cudaStream_t stream = nullptr;
  };
  const int world_;
  const int64_t staging_bytes_;
  std::vector<Rank> ranks_;
  uint32_t* abort_ = nullptr;
};

// One all-reduce of fresh inputs (seeded by `seed`) at rank r's data + offset, checked on every
// rank.
void RunAndCheck(SimulatedRanks& ranks, int64_t n, ElemType type, bool two_shot, int64_t offset,
                 int late, uint64_t seed) {
  std::vector<std::vector<float>> inputs;
  for (int r = 0; r < ranks.world(); ++r) {
    inputs.push_back(Inputs(n, type, seed * 16 + r));
    ranks.Upload(r, offset, ToBytes(inputs.back(), type));
  }
  ranks.LaunchAll(late, [&](int r) {
    PeerAllReduce(ranks.Params(r, ranks.data(r, offset), n, type, two_shot), ranks.stream(r));
  });
  ASSERT_TRUE(ranks.Finish());
  const std::vector<char> want = RankOrderSum(inputs, type);
  for (int r = 0; r < ranks.world(); ++r) {
    const std::string diff =
        FirstDifference(Download(ranks.data(r, offset), n * ElemBytes(type)), want, type);
    EXPECT_TRUE(diff.empty()) << "rank " << r << ": " << diff;
  }
}

class SimulatedRanksTest : public ::testing::TestWithParam<std::tuple<int, ElemType>> {};

TEST_P(SimulatedRanksTest, EveryRankGetsTheRankOrderSumBitForBit) {
  DSV3_SKIP_WITHOUT_GPU();
  const auto [world, type] = GetParam();
  SimulatedRanks ranks(world, kStagingBytes);
  const int64_t max_n = kStagingBytes / ElemBytes(type);
  int calls = 0;
  // One element, odd sizes (no whole 16-byte pack, fewer packs than ranks), a decode token,
  // 4, 64 and 256 tokens (+ odd tails), and the whole staging buffer.
  for (int64_t n : {int64_t{1}, int64_t{5}, int64_t{13}, int64_t{1001}, kHidden, 4 * kHidden + 3,
                    64 * kHidden + 1, 256 * kHidden, max_n}) {
    if (n > max_n) continue;
    for (bool two_shot : {false, true}) {
      // Misaligned by one element: the caller's tensor element by element.
      for (int64_t offset : {int64_t{0}, ElemBytes(type)}) {
        SCOPED_TRACE(absl::StrCat("n ", n, two_shot ? " two-shot" : " one-shot", " offset ", offset,
                                  " call ", calls));
        RunAndCheck(ranks, n, type, two_shot, offset, calls % world, calls);
        if (HasFatalFailure()) return;
        ++calls;
      }
    }
  }
}

// Each rank's graph holds a one-shot all-reduce of a decode token and a two-shot one of 64
// tokens; the graphs are replayed with new inputs, with eager calls between replays, so the
// call count must advance on the device in graphs and out of them alike.
TEST_P(SimulatedRanksTest, CapturedGraphsReplayWithNewInputs) {
  DSV3_SKIP_WITHOUT_GPU();
  const auto [world, type] = GetParam();
  SimulatedRanks ranks(world, kStagingBytes);
  const int64_t elem = ElemBytes(type), small = kHidden, large = 64 * kHidden + 1;
  const int64_t large_offset = 64 << 10;  // the second tensor, after the first
  std::vector<cudaGraphExec_t> graphs(world);
  for (int r = 0; r < world; ++r) {
    cudaGraph_t graph;
    ASSERT_EQ(cudaStreamBeginCapture(ranks.stream(r), cudaStreamCaptureModeThreadLocal),
              cudaSuccess);
    PeerAllReduce(ranks.Params(r, ranks.data(r), small, type, false), ranks.stream(r));
    PeerAllReduce(ranks.Params(r, ranks.data(r, large_offset), large, type, true), ranks.stream(r));
    ASSERT_EQ(cudaStreamEndCapture(ranks.stream(r), &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&graphs[r], graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  }
  for (int replay = 0; replay < 4; ++replay) {
    SCOPED_TRACE(absl::StrCat("replay ", replay));
    std::vector<std::vector<float>> small_in, large_in;
    for (int r = 0; r < world; ++r) {
      small_in.push_back(Inputs(small, type, 1000 + replay * 16 + r));
      large_in.push_back(Inputs(large, type, 2000 + replay * 16 + r));
      ranks.Upload(r, 0, ToBytes(small_in.back(), type));
      ranks.Upload(r, large_offset, ToBytes(large_in.back(), type));
    }
    ranks.LaunchAll(replay % world,
                    [&](int r) { DSV3_CUDA_CHECK(cudaGraphLaunch(graphs[r], ranks.stream(r))); });
    ASSERT_TRUE(ranks.Finish());
    const std::vector<char> small_want = RankOrderSum(small_in, type);
    const std::vector<char> large_want = RankOrderSum(large_in, type);
    for (int r = 0; r < world; ++r) {
      std::string diff = FirstDifference(Download(ranks.data(r), small * elem), small_want, type);
      EXPECT_TRUE(diff.empty()) << "rank " << r << ", one-shot: " << diff;
      diff = FirstDifference(Download(ranks.data(r, large_offset), large * elem), large_want, type);
      EXPECT_TRUE(diff.empty()) << "rank " << r << ", two-shot: " << diff;
    }
    if (HasFailure()) break;
    RunAndCheck(ranks, 3 * kHidden + 1, type, replay % 2 == 1, 0, (replay + 1) % world, replay);
    if (HasFatalFailure()) break;
  }
  for (cudaGraphExec_t g : graphs) cudaGraphExecDestroy(g);
}

INSTANTIATE_TEST_SUITE_P(Ranks, SimulatedRanksTest,
                         ::testing::Combine(::testing::Values(2, 4, 8),
                                            ::testing::Values(ElemType::kF32, ElemType::kBF16)),
                         [](const auto& info) {
                           return absl::StrCat(
                               std::get<0>(info.param), "Ranks",
                               std::get<1>(info.param) == ElemType::kBF16 ? "Bf16" : "F32");
                         });

// The start barrier holds: ranks whose peer never comes wait (their streams stay busy) until the
// waits are aborted, and then they end without a device error.
TEST(SimulatedRanksBarrierTest, AMissingRankHoldsTheOthersUntilAbort) {
  DSV3_SKIP_WITHOUT_GPU();
  for (bool two_shot : {false, true}) {
    SCOPED_TRACE(two_shot ? "two-shot" : "one-shot");
    SimulatedRanks ranks(4, 1 << 20);
    for (int r = 1; r < 4; ++r) {
      PeerAllReduce(ranks.Params(r, ranks.data(r), kHidden, ElemType::kF32, two_shot),
                    ranks.stream(r));
    }
    absl::SleepFor(absl::Milliseconds(100));
    for (int r = 1; r < 4; ++r) {
      EXPECT_EQ(cudaStreamQuery(ranks.stream(r)), cudaErrorNotReady)
          << "rank " << r << " finished although rank 0 never staged its input";
    }
    ranks.Abort();
    for (int r = 1; r < 4; ++r) EXPECT_EQ(cudaStreamQuery(ranks.stream(r)), cudaSuccess);
  }
}

// The algorithm choice (pure logic, no GPU): one-shot at 2 ranks always, two-shot above 512 KiB
// at 3-4 ranks and above 256 KiB at 5-8.
TEST(CustomAllReducePolicyTest, TwoShotAboveTheCutoffWithMoreThanTwoRanks) {
  const struct {
    int64_t bytes;
    int world;
    bool two_shot;
  } table[] = {
      {4 * kHidden, 2, false},      {256 * 4 * kHidden, 2, false}, {4 * kHidden, 8, false},
      {256 << 10, 8, false},        {(256 << 10) + 1, 8, true},    {512 << 10, 4, false},
      {(512 << 10) + 1, 4, true},   {(512 << 10) + 1, 3, true},    {16 * 4 * kHidden, 8, true},
      {16 * 4 * kHidden, 4, false}, {64 * 4 * kHidden, 4, true},
  };
  for (const auto& row : table) {
    EXPECT_EQ(kernels::PeerAllReduceTwoShot(row.bytes, row.world), row.two_shot)
        << row.bytes << " bytes, " << row.world << " ranks";
  }
}

// Two processes (this one is rank 0; it spawns rank 1, a copy of this binary running only this
// test with RANK=1 and LOCAL_RANK=1, as a --tp 2 launch does), each on its own GPU, the peers'
// buffers opened as CUDA IPC handles: every size must equal NCCL's result and the rank-order sum
// bit for bit (at two ranks both are a + b), eagerly and in a replayed CUDA graph.
TEST(CustomAllReduceIpcTest, MatchesNcclBitForBitOnTwoGpus) {
  if (CudaBackend::DeviceCount() < 2) {
    GTEST_SKIP() << "fewer than two CUDA devices: the custom all-reduce's IPC test is skipped";
  }
  auto config = ParallelConfigFromEnvironment(2, NodeLaunchFlags{}, absl::Seconds(60));
  ASSERT_TRUE(config.ok()) << config.status();
  auto group = RankGroup::Start(
      *config, {"--gtest_filter=CustomAllReduceIpcTest.MatchesNcclBitForBitOnTwoGpus"});
  ASSERT_TRUE(group.ok()) << group.status();
  const int rank = config->rank, device = config->local_rank;
  Communicator& host = (*group)->communicator();
  ASSERT_EQ(cudaSetDevice(device), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  auto nccl = CreateNcclCommunicator((*group)->store(), host,
                                     {.local_rank = device, .cuda_stream = stream});
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  auto custom = CustomAllReduce::Create(host, device, kStagingBytes);
  ASSERT_TRUE(custom.ok()) << custom.status();
  void *by_nccl, *by_custom;
  ASSERT_EQ(cudaMalloc(&by_nccl, kStagingBytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&by_custom, kStagingBytes), cudaSuccess);

  // Both ranks' inputs (each rank makes all of them, for the reference), this rank's uploaded to
  // both buffers.
  auto upload = [&](int64_t n, ElemType type, uint64_t seed) {
    std::vector<std::vector<float>> inputs = {Inputs(n, type, seed * 16),
                                              Inputs(n, type, seed * 16 + 1)};
    const std::vector<char> mine = ToBytes(inputs[rank], type);
    for (void* buffer : {by_nccl, by_custom}) {
      DSV3_CUDA_CHECK(cudaMemcpyAsync(buffer, mine.data(), mine.size(), cudaMemcpyHostToDevice,
                                      stream));  // ordered before the all-reduces on `stream`
    }
    return RankOrderSum(inputs, type);
  };
  uint64_t seed = 0;
  for (ElemType type : {ElemType::kF32, ElemType::kBF16}) {
    for (int64_t n : {int64_t{1}, int64_t{7}, kHidden, 4 * kHidden + 3, 64 * kHidden + 1,
                      256 * kHidden, kStagingBytes / ElemBytes(type)}) {
      if (n * ElemBytes(type) > kStagingBytes) continue;
      SCOPED_TRACE(
          absl::StrCat("rank ", rank, " n ", n, type == ElemType::kBF16 ? " BF16" : " F32"));
      const std::vector<char> want = upload(n, type, ++seed);
      const TensorView a = TensorView::Contiguous(by_nccl, ToDType(type), {n}, Device::kCuda);
      const TensorView b = TensorView::Contiguous(by_custom, ToDType(type), {n}, Device::kCuda);
      ASSERT_TRUE((*nccl)->AllReduceSum(a).ok());
      ASSERT_TRUE((*custom)->AllReduce(b, stream));
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      const std::vector<char> got_nccl = Download(by_nccl, a.nbytes());
      const std::vector<char> got = Download(by_custom, b.nbytes());
      EXPECT_EQ(FirstDifference(got, got_nccl, type), "") << "custom against NCCL";
      EXPECT_EQ(FirstDifference(got, want, type), "") << "custom against the rank-order sum";
    }
  }

  // A graph of one decode token's F32 all-reduce, replayed with new inputs.
  const TensorView token = TensorView::Contiguous(by_custom, DType::kF32, {kHidden}, Device::kCuda);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_TRUE((*custom)->AllReduce(token, stream));
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 3; ++replay) {
    const std::vector<char> want = upload(kHidden, ElemType::kF32, 100 + replay);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(FirstDifference(Download(by_custom, token.nbytes()), want, ElemType::kF32), "")
        << "rank " << rank << ", replay " << replay;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  // No rank frees its buffers while the other may still read them.
  ASSERT_TRUE(host.Barrier().ok());
  custom->reset();
  nccl->reset();
  cudaFree(by_nccl);
  cudaFree(by_custom);
  cudaStreamDestroy(stream);
  if (rank == 0) {
    const auto exit = (*group)->AwaitWorkerExit(absl::Seconds(60));
    ASSERT_TRUE(exit.has_value()) << "rank 1 did not exit";
    EXPECT_EQ(exit->second, "exited with status 0") << "rank 1's run of this test failed (above)";
  }
}

// The whole model at --tp 2 with the custom all-reduce on: the prompt's logits (a prefill) and
// the generated tokens (decode steps, graphed after the first) equal NCCL's bit for bit, since
// at two ranks both sum a + b.
TEST(CustomAllReduceGenerateTest, TwoGpuGenerationEqualsNcclsBitForBit) {
  if (CudaBackend::DeviceCount() < 2) {
    GTEST_SKIP() << "fewer than two CUDA devices: the custom all-reduce's --tp 2 test is skipped";
  }
  ::dsv3::testing::TempDir dir;
  std::string tokens[2];
  NpyArray logits[2];
  for (int custom = 0; custom < 2; ++custom) {
    const std::string out = dir.file(absl::StrCat("logits", custom, ".npy"));
    const auto r = ::dsv3::testing::RunCommand(
        ::dsv3::testing::ToolPath("dsv3-generate") + " --device cuda --tp 2 --model " +
        ::dsv3::testing::FixturePath("smooth-fp8") +
        " --prompt-ids 5,77,12,99,31,8,640,3 --max-new-tokens 12 --ignore-eos --logits-out " + out +
        (custom ? " --custom-all-reduce" : ""));
    ASSERT_TRUE(!r.signaled && r.exit_code == 0) << r.err;
    if (custom) {
      EXPECT_NE(r.err.find("custom all-reduce on"), std::string::npos)
          << "the custom all-reduce was not used:\n"
          << r.err;
    }
    tokens[custom] = r.out;
    auto read = ReadNpyF32(out);
    ASSERT_TRUE(read.ok()) << read.status();
    logits[custom] = *std::move(read);
  }
  EXPECT_EQ(tokens[1], tokens[0]);
  ASSERT_EQ(logits[1].shape, logits[0].shape);
  EXPECT_EQ(std::memcmp(logits[1].data.data(), logits[0].data.data(),
                        logits[0].data.size() * sizeof(float)),
            0)
      << "logits differ (relative error "
      << ::dsv3::testing::RelError(logits[1].data, logits[0].data) << ")";
}

}  // namespace
}  // namespace dsv3
