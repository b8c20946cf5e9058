// KV sizing by --gpu-memory-utilization on the device (engine/kv_sizing.h): with fraction F, what
// this process holds on the GPU (cudaMemGetInfo, counted from the backend's creation) stays
// within F x total after startup and after a workload at the largest batch (prefill at
// max_batched_tokens, decode graphs captured), and the KV cache fills the budget: after startup
// the process holds at least F x total minus the graph reserve minus the tolerance. CUDA graphs
// stay within their reserve. A fraction more than was free at startup is refused naming the flag.
//
// Tolerance: kTolerance = 1 GiB (0.7% of an H200's 141 GiB): the pool reserves in chunks, and the
// driver's graph and cuBLASLt allocations are measured, not predicted.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "engine/engine.h"
#include "engine/model/model.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RunGreedyRequests;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kTolerance = int64_t{1} << 30;
constexpr int64_t kGraphReserve = 256 * kMiB;

class CudaKvSizingTest : public ::dsv3::testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    gpu_->SetGraphMemoryLimit(kGraphReserve);
    auto model = DeepseekV3Model::Load(FixturePath("ragged-fp8"), *gpu_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }
  void TearDown() override {
    model_.reset();
    GpuTest::TearDown();
  }
  // Bytes this process took on the device since the backend was created.
  int64_t Ours() {
    const DeviceMemory m = *gpu_->MemoryInfo();
    return m.free_at_start - m.free;
  }
  EngineConfig Config(double fraction) const {
    EngineConfig c;
    c.block_size = 64;
    c.kv_memory_bytes = 0;
    c.gpu_memory_utilization = fraction;
    c.graph_memory_bytes = kGraphReserve;
    c.scheduler.max_batched_tokens = 2048;
    c.scheduler.max_running_seqs = 64;
    return c;
  }
  std::unique_ptr<DeepseekV3Model> model_;
};

TEST_F(CudaKvSizingTest, ProcessStaysWithinTheFractionAndKvFillsIt) {
  for (double fraction : {0.3, 0.6}) {
    SCOPED_TRACE(fraction);
    const int64_t total = gpu_->MemoryInfo()->total;
    const int64_t allowed = static_cast<int64_t>(fraction * total);
    auto engine = Engine::Create(*model_, /*tokenizer=*/nullptr, Config(fraction));
    ASSERT_TRUE(engine.ok()) << engine.status();
    const int64_t after_startup = Ours();
    EXPECT_LE(after_startup, allowed + kTolerance);
    EXPECT_GE(after_startup, allowed - kGraphReserve - kTolerance);

    // The largest batches: 64 prompts of 96 tokens (prefill steps of 2048 tokens), then 64
    // sequences decoding through CUDA graphs.
    RunGreedyRequests(**engine, 64, 96, 48, model_->config().vocab_size);
    ASSERT_FALSE(HasFatalFailure());
    gpu_->Synchronize();
    const int64_t after_workload = Ours();
    const int64_t graph_bytes = gpu_->step_graphs()->memory_bytes();
    std::printf("F %.2f of %.1f GiB: after startup %.2f GiB, after the workload %.2f GiB; "
                "graph memory %.1f MiB\n",
                fraction, total / double(1 << 30), after_startup / double(1 << 30),
                after_workload / double(1 << 30), graph_bytes / double(kMiB));
    EXPECT_LE(after_workload, allowed + kTolerance);
    EXPECT_GT(graph_bytes, 0) << "decode steps were captured";
    EXPECT_LE(graph_bytes, kGraphReserve);
    (*engine)->Shutdown();
    engine->reset();
    gpu_->ReleaseCachedMemory();
  }
}

TEST_F(CudaKvSizingTest, FractionBeyondWhatWasFreeIsRefusedNamingTheFlag) {
  // The CUDA context and the weights already hold memory: all of it was never free.
  auto engine = Engine::Create(*model_, /*tokenizer=*/nullptr, Config(1.0));
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(),
              ::testing::HasSubstr("--gpu-memory-utilization 1 asks for"));
}

}  // namespace
}  // namespace dsv3
