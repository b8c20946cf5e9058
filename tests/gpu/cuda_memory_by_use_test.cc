// Issue 18: device memory by use (engine/backend/memory_by_use.h) on the GPU.
// - The backend's weight_bytes equals the bytes of the tensors the weight load made, and what
//   docs/cuda.md's formats predict from the checkpoint alone (FP8 padded to 64 rows and K to a
//   multiple of 4 x 128 with its block scales, stacked FP8 parts in whole 128-row blocks, other 2-D
//   tensors BF16, 1-D F32); freeing the weights gives it all back.
// - A served engine reports (EngineStats::gpu_memory, what /metrics shows) its KV cache's exact
//   bytes, the weights plus only what is derived from them, CUDA graphs once decode steps ran,
//   and four uses that add up to what the process holds, of which the pool holds the weights and
//   the cache.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/backend/memory_by_use.h"
#include "engine/config/model_config.h"
#include "engine/engine.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model.h"
#include "engine/model/model_weights.h"
#include "engine/weights/checkpoint.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace dsv3 {
namespace {

using ::dsv3::testing::FixturePath;
using ::dsv3::testing::RunGreedyRequests;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGraphLimit = 256 * kMiB;
// What the process may hold beyond the pool and the graphs: cuBLASLt's workspace and the kernels
// the driver loads on first use (as in gpu_cuda_kv_sizing_test).
constexpr int64_t kOutsidePool = int64_t{1} << 30;

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The device bytes of one FP8 linear of `rows` x k: rows padded to 64 and K to a multiple of 4
// x 128, and its block scales.
int64_t Fp8LinearBytes(int64_t rows, int64_t k) {
  const int64_t k_pad = RoundUp((k + 127) / 128, 4) * 128;
  return RoundUp(rows, 64) * k_pad + (rows + 127) / 128 * (k_pad / 128) * 4;
}

// The device bytes docs/cuda.md's "Formats" gives the tensors the model loads from `ckpt`: the
// MTP layer's own embedding and head are not loaded (the main model's are shared), and block
// scales count with their weight. Stacked linears (q_a with kv_a; gate with up of the dense MLPs
// and shared experts, not of the routed experts) are one weight, whose FP8 parts each take whole
// 128-row blocks (engine/weights/linear_stack.h).
int64_t DeviceBytesByTheFormats(const Checkpoint& ckpt, int64_t mtp_layer) {
  const std::string mtp = "model.layers." + std::to_string(mtp_layer) + ".";
  // The second part of a stack, by the first part's name.
  auto second_part = [&](const std::string& name) -> std::string {
    for (auto [first, second] : {std::pair{"q_a_proj.weight", "kv_a_proj_with_mqa.weight"},
                                 std::pair{"gate_proj.weight", "up_proj.weight"}}) {
      if (name.ends_with(first) && name.find(".experts.") == std::string::npos) {
        return name.substr(0, name.size() - std::string(first).size()) + second;
      }
    }
    return "";
  };
  std::set<std::string> stacked_seconds;
  for (const std::string& name : ckpt.Names()) {
    const std::string second = second_part(name);
    if (!second.empty() && ckpt.Get(second).ok()) stacked_seconds.insert(second);
  }
  int64_t bytes = 0;
  for (const std::string& name : ckpt.Names()) {
    if (name.ends_with(".weight_scale_inv") || name == mtp + "embed_tokens.weight" ||
        name == mtp + "shared_head.head.weight" || stacked_seconds.contains(name)) {
      continue;
    }
    const TensorView t = *ckpt.Get(name);
    const std::string second = second_part(name);
    const bool stacked = stacked_seconds.contains(second);
    if (t.dtype == DType::kF8E4M3) {
      int64_t rows = t.dim(0);
      if (stacked) rows = RoundUp(rows, 128) + RoundUp(ckpt.Get(second)->dim(0), 128);
      bytes += Fp8LinearBytes(rows, t.dim(1));
    } else {
      int64_t numel = t.numel();
      if (stacked) numel += ckpt.Get(second)->numel();
      bytes += numel * (t.ndim == 2 ? 2 : 4);
    }
  }
  return bytes;
}

using CudaMemoryByUseTest = ::dsv3::testing::GpuTest;

TEST_F(CudaMemoryByUseTest, WeightBytesAreTheLoadedTensorsAndGoWithThem) {
  for (const char* fixture : {"smooth-fp8", "ragged-fp8", "smooth-bf16"}) {
    SCOPED_TRACE(fixture);
    ASSERT_EQ(gpu_->MemoryInfo()->weight_bytes, 0);
    auto ckpt = Checkpoint::Open(FixturePath(fixture));
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    auto config = ModelConfig::FromModelDir(FixturePath(fixture));
    ASSERT_TRUE(config.ok()) << config.status();
    auto weights = ModelWeights::Load(**ckpt, *config, *gpu_);
    ASSERT_TRUE(weights.ok()) << weights.status();
    int64_t stored = 0;
    for (const Tensor& t : (*weights)->storage) stored += t.view().nbytes();
    const int64_t counted = gpu_->MemoryInfo()->weight_bytes;
    const int64_t predicted = DeviceBytesByTheFormats(**ckpt, config->num_hidden_layers);
    std::printf("%s: weight_bytes %lld, storage %lld, by the formats %lld\n", fixture,
                static_cast<long long>(counted), static_cast<long long>(stored),
                static_cast<long long>(predicted));
    EXPECT_EQ(counted, stored);
    EXPECT_EQ(counted, predicted);
    weights->reset();
    EXPECT_EQ(gpu_->MemoryInfo()->weight_bytes, 0) << "freed weights still counted";
  }
}

TEST_F(CudaMemoryByUseTest, EngineSplitsWhatItHoldsByUse) {
  gpu_->SetGraphMemoryLimit(kGraphLimit);
  auto model = DeepseekV3Model::Load(FixturePath("smooth-fp8"), *gpu_);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& mc = (*model)->config();
  const int64_t loaded = gpu_->MemoryInfo()->weight_bytes;
  EngineConfig config;
  config.block_size = 64;
  config.kv_memory_bytes = 64 * kMiB;
  config.graph_memory_bytes = kGraphLimit;
  config.scheduler.max_batched_tokens = 512;
  config.scheduler.max_running_seqs = 8;
  auto engine = Engine::Create(**model, /*tokenizer=*/nullptr, config);
  ASSERT_TRUE(engine.ok()) << engine.status();
  // The cache's blocks and its scratch block, every layer.
  const int64_t kv_bytes = ((*engine)->Stats().kv_blocks_total + 1) *
                           KvCache::BytesPerBlock(mc, config.block_size, DType::kBF16);

  const std::optional<GpuMemoryByUse> at_start = (*engine)->Stats().gpu_memory;
  ASSERT_TRUE(at_start.has_value()) << "the CUDA backend reports device memory";
  EXPECT_EQ(at_start->weights, loaded) << "no step ran: nothing derived yet";
  EXPECT_EQ(at_start->kv_cache, kv_bytes);

  // 8 sequences decoding together (graph steps), then, after the stats' refresh interval, one
  // more request whose steps publish a fresh measurement.
  RunGreedyRequests(**engine, 8, 20, 24, mc.vocab_size);
  ASSERT_FALSE(HasFatalFailure());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  RunGreedyRequests(**engine, 1, 20, 2, mc.vocab_size);
  ASSERT_FALSE(HasFatalFailure());

  const std::optional<GpuMemoryByUse> m = (*engine)->Stats().gpu_memory;
  ASSERT_TRUE(m.has_value());
  const DeviceMemory now = *gpu_->MemoryInfo();
  std::printf("held %.1f MiB: weights %.1f (loaded %.1f), KV cache %.1f, CUDA graphs %.1f, "
              "workspace %.1f; pool %.1f MiB\n",
              m->held / double(kMiB), m->weights / double(kMiB), loaded / double(kMiB),
              m->kv_cache / double(kMiB), m->cuda_graphs / double(kMiB),
              m->workspace / double(kMiB), now.pool_reserved / double(kMiB));
  // Steps add only derived weights (BF16 copies of FP8 kv_b, the experts' pointer tables).
  EXPECT_GE(m->weights, loaded);
  EXPECT_LT(m->weights, 2 * loaded);
  EXPECT_EQ(m->kv_cache, kv_bytes);
  // The graph runner's output buffers at least ([256, V] and [256, H] F32), within the limit.
  const int64_t outputs = int64_t{256} * (mc.vocab_size + mc.hidden_size) * 4;
  EXPECT_GE(m->cuda_graphs, outputs);
  EXPECT_LE(m->cuda_graphs, kGraphLimit + outputs);
  // The known uses fit in what the process holds, the four add up to it, and the pool holds
  // the weights and the cache.
  EXPECT_LE(m->weights + m->kv_cache + m->cuda_graphs, m->held);
  EXPECT_EQ(m->weights + m->kv_cache + m->cuda_graphs + m->workspace, m->held);
  EXPECT_LE(m->weights + m->kv_cache, now.pool_reserved);
  EXPECT_LE(m->held, now.pool_reserved + m->cuda_graphs + kOutsidePool);
  (*engine)->Shutdown();
  engine->reset();
}

}  // namespace
}  // namespace dsv3
