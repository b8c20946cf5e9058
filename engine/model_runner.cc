#include "engine/model_runner.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/data_parallel_forward.h"
#include "engine/model/model.h"
#include "engine/model/step_graphs.h"
#include "engine/parallel/batch_codec.h"
#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

// AllocateCache on one rank: the graphs that write the old cache and then the cache go first
// (so that the two caches never coexist), and num_blocks 0 leaves none, with the pool's unused
// memory handed back to the driver.
std::unique_ptr<KvCache> MakeCache(DeepseekV3Model& model, DecodeGraphRunner& graphs,
                                   int64_t num_blocks, int32_t block_size, bool mtp_layer,
                                   std::unique_ptr<KvCache> old) {
  graphs.DropGraphs();
  old.reset();
  if (num_blocks == 0) {
    model.backend().ReleaseCachedMemory();
    return nullptr;
  }
  return std::make_unique<KvCache>(model.backend(), model.config(), num_blocks, block_size,
                                   mtp_layer);
}

// One step of the main model on any rank of a group: this rank's part under data-parallel
// attention, the whole batch under tensor parallelism. Hidden states are asked for by
// batch.hidden_rows alike on every rank, so that every rank pads and graphs the step the same
// way; `hidden` (null on workers) gets them on rank 0.
absl::Status StepOnThisRank(DeepseekV3Model& model, DecodeGraphRunner& graphs,
                            Communicator& comm, const ForwardBatch& batch, KvCache& cache,
                            std::vector<float>& logits, MlaMode mla_mode,
                            std::vector<float>* hidden) {
  if (model.dp_attention()) {
    return ForwardDataParallel(model, &graphs, comm, batch, cache, logits, mla_mode, hidden);
  }
  std::vector<float> worker_hidden;  // stays empty: only rank 0 returns hidden states
  if (hidden == nullptr && !batch.hidden_rows.empty()) hidden = &worker_hidden;
  return graphs.Forward(batch, cache, logits, mla_mode, hidden);
}

// The MTP module's step on any rank of a group; `hidden` is rank 0's (empty on workers), and so
// are the outputs (`hidden_out` null on workers).
absl::Status MtpStepOnThisRank(DeepseekV3Model& model, Communicator& comm,
                               const ForwardBatch& batch, absl::Span<const float> hidden,
                               KvCache& cache, std::vector<float>& logits,
                               std::vector<float>* hidden_out) {
  if (model.dp_attention()) {
    std::vector<float> worker_out;
    return ForwardMtpDataParallel(model, comm, batch, hidden, cache, logits,
                                  hidden_out != nullptr ? *hidden_out : worker_out);
  }
  return model.ForwardMtp(batch, hidden, cache, logits, hidden_out);
}

class LocalModelRunner final : public ModelRunner {
 public:
  explicit LocalModelRunner(DeepseekV3Model& model) : model_(model), graphs_(model) {}

  absl::Status AllocateCache(int64_t num_blocks, int32_t block_size, bool mtp_layer) override {
    cache_ = MakeCache(model_, graphs_, num_blocks, block_size, mtp_layer, std::move(cache_));
    return absl::OkStatus();
  }
  absl::Status Execute(const ForwardBatch& batch, std::vector<float>& logits, MlaMode mla_mode,
                       std::vector<float>* hidden) override {
    return graphs_.Forward(batch, *cache_, logits, mla_mode, hidden);
  }
  absl::Status ExecuteMtp(const ForwardBatch& batch, absl::Span<const float> hidden,
                          std::vector<float>& logits, std::vector<float>& hidden_out) override {
    return model_.ForwardMtp(batch, hidden, *cache_, logits, &hidden_out);
  }
  absl::Status Health() override { return absl::OkStatus(); }
  void Shutdown() override {}
  DeepseekV3Model& model() override { return model_; }
  int world_size() const override { return 1; }
  int attention_ranks() const override { return 1; }
  KvCache& cache() override { return *cache_; }
  int64_t graph_memory_bytes() override { return graphs_.stats().memory_bytes; }

 private:
  DeepseekV3Model& model_;
  DecodeGraphRunner graphs_;
  std::unique_ptr<KvCache> cache_;
};

// Rank 0: every message goes out under one mutex, so heartbeats never interleave with a step.
class TpLeaderRunner final : public ModelRunner {
 public:
  TpLeaderRunner(DeepseekV3Model& model, Communicator& comm, TpLeaderOptions options)
      : model_(model), comm_(comm), options_(std::move(options)), graphs_(model) {
    heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  }

  ~TpLeaderRunner() override { Shutdown(); }

  absl::Status AllocateCache(int64_t num_blocks, int32_t block_size, bool mtp_layer) override {
    absl::MutexLock lock(&mu_);
    ControlMessage m{.kind = ControlMessage::Kind::kAllocateCache,
                     .num_kv_blocks = num_blocks,
                     .kv_block_size = block_size,
                     .mtp_layer = mtp_layer};
    DSV3_RETURN_IF_ERROR(SendLocked(m));
    cache_ = MakeCache(model_, graphs_, num_blocks, block_size, mtp_layer, std::move(cache_));
    return absl::OkStatus();
  }

  absl::Status Execute(const ForwardBatch& batch, std::vector<float>& logits, MlaMode mla_mode,
                       std::vector<float>* hidden) override {
    absl::MutexLock lock(&mu_);
    ControlMessage m{.kind = ControlMessage::Kind::kStep, .mla_mode = mla_mode, .batch = batch};
    if (hidden == nullptr) m.batch.hidden_rows.clear();  // what the workers see of the step
    DSV3_RETURN_IF_ERROR(SendLocked(m));
    const absl::Status st =
        StepOnThisRank(model_, graphs_, comm_, m.batch, *cache_, logits, mla_mode, hidden);
    if (!st.ok()) return FailLocked(st);
    last_activity_ = absl::Now();
    return absl::OkStatus();
  }

  absl::Status ExecuteMtp(const ForwardBatch& batch, absl::Span<const float> hidden,
                          std::vector<float>& logits, std::vector<float>& hidden_out) override {
    absl::MutexLock lock(&mu_);
    DSV3_RETURN_IF_ERROR(SendLocked({.kind = ControlMessage::Kind::kMtpStep, .batch = batch}));
    const absl::Status st =
        MtpStepOnThisRank(model_, comm_, batch, hidden, *cache_, logits, &hidden_out);
    if (!st.ok()) return FailLocked(st);
    last_activity_ = absl::Now();
    return absl::OkStatus();
  }

  absl::Status Health() override {
    absl::MutexLock lock(&mu_);
    return failed_;
  }

  void Shutdown() override {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
      // Best effort: a broken group has nobody to tell.
      if (failed_.ok()) SendLocked({.kind = ControlMessage::Kind::kShutdown}).IgnoreError();
    }
    heartbeat_.join();
  }

  DeepseekV3Model& model() override { return model_; }
  int world_size() const override { return comm_.world_size(); }
  int attention_ranks() const override {
    return model_.dp_attention() ? comm_.world_size() : 1;
  }
  KvCache& cache() override { return *cache_; }
  int64_t graph_memory_bytes() override {
    absl::MutexLock lock(&mu_);
    return graphs_.stats().memory_bytes;
  }

 private:
  absl::Status SendLocked(const ControlMessage& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!failed_.ok()) return failed_;
    if (stopping_ && m.kind != ControlMessage::Kind::kShutdown) {
      return absl::FailedPreconditionError("the model runner was shut down");
    }
    std::string bytes = EncodeControlMessage(m);
    if (absl::Status st = comm_.Broadcast(bytes, 0); !st.ok()) return FailLocked(st);
    return absl::OkStatus();
  }

  absl::Status FailLocked(const absl::Status& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (failed_.ok()) {
      failed_ = absl::UnavailableError(
          absl::StrCat("tensor-parallel group failed: ", st.message()));
      if (options_.on_failure) options_.on_failure(failed_);
    }
    return failed_;
  }

  void HeartbeatLoop() {
    absl::MutexLock lock(&mu_);
    while (true) {
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), options_.heartbeat_interval);
      if (stopping_ || !failed_.ok()) return;
      if (absl::Now() - last_activity_ < options_.heartbeat_interval) continue;
      if (!SendLocked({.kind = ControlMessage::Kind::kHeartbeat}).ok()) return;
      // The barrier makes every worker answer: a dead or stuck one shows up here.
      if (absl::Status st = comm_.Barrier(); !st.ok()) {
        FailLocked(st).IgnoreError();
        return;
      }
      last_activity_ = absl::Now();
    }
  }

  DeepseekV3Model& model_;
  Communicator& comm_;
  const TpLeaderOptions options_;
  absl::Mutex mu_;
  // Every rank pads and graphs the same steps the same way (the same batch, the same rules).
  DecodeGraphRunner graphs_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<KvCache> cache_ ABSL_GUARDED_BY(mu_);
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_activity_ ABSL_GUARDED_BY(mu_) = absl::Now();
  std::thread heartbeat_;
};

// A plan from rank 0 is trusted to be valid, but it must at least fit this rank's model and
// cache: a mismatch (ranks of different builds or checkpoints) must fail, not crash.
absl::Status CheckPlanFits(const ForwardBatch& batch, const ModelConfig& config,
                           const KvCache* cache, int attention_ranks) {
  if (cache == nullptr) return absl::FailedPreconditionError("a step arrived before the cache");
  for (int32_t id : batch.token_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan token id ", id, " outside the vocabulary of ", config.vocab_size));
    }
  }
  for (const SequenceSlice& s : batch.sequences) {
    if (s.attention_rank >= attention_ranks) {
      return absl::InvalidArgumentError(absl::StrCat("plan attention rank ", s.attention_rank,
                                                     " outside ", attention_ranks,
                                                     " attention ranks"));
    }
    const int64_t blocks_needed =
        (static_cast<int64_t>(s.context_end()) + cache->block_size() - 1) / cache->block_size();
    if (static_cast<int64_t>(s.block_table.size()) < blocks_needed) {
      return absl::InvalidArgumentError("plan block table does not cover its positions");
    }
    for (int32_t block : s.block_table) {
      if (block < 0 || block >= cache->num_blocks()) {
        return absl::InvalidArgumentError(
            absl::StrCat("plan block ", block, " outside the cache of ", cache->num_blocks()));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<GpuMemoryByUse> MeasureGpuMemory(ModelRunner& runner) {
  const std::optional<DeviceMemory> memory = runner.model().backend().MemoryInfo();
  if (!memory) return std::nullopt;
  return SplitGpuMemory(*memory, runner.cache().bytes(), runner.graph_memory_bytes());
}

std::unique_ptr<ModelRunner> MakeLocalModelRunner(DeepseekV3Model& model) {
  return std::make_unique<LocalModelRunner>(model);
}

std::unique_ptr<ModelRunner> MakeTpLeaderRunner(DeepseekV3Model& model, Communicator& comm,
                                                TpLeaderOptions options) {
  return std::make_unique<TpLeaderRunner>(model, comm, std::move(options));
}

absl::Status RunWorker(DeepseekV3Model& model, Communicator& comm) {
  DecodeGraphRunner graphs(model);
  std::unique_ptr<KvCache> cache;
  std::vector<float> logits;  // left empty on workers: only rank 0 samples
  while (true) {
    std::string bytes;
    if (absl::Status st = comm.Broadcast(bytes, 0); !st.ok()) {
      return absl::UnavailableError(absl::StrCat("rank ", comm.rank(),
                                                 ": lost rank 0 while waiting for the next step: ",
                                                 st.message()));
    }
    DSV3_ASSIGN_OR_RETURN(ControlMessage m, DecodeControlMessage(bytes));
    switch (m.kind) {
      case ControlMessage::Kind::kShutdown:
        return absl::OkStatus();
      case ControlMessage::Kind::kHeartbeat:
        DSV3_RETURN_IF_ERROR(comm.Barrier());
        break;
      case ControlMessage::Kind::kAllocateCache:
        cache = MakeCache(model, graphs, m.num_kv_blocks, m.kv_block_size, m.mtp_layer,
                          std::move(cache));
        break;
      case ControlMessage::Kind::kStep:
        DSV3_RETURN_IF_ERROR(CheckPlanFits(m.batch, model.config(), cache.get(),
                                           model.dp_attention() ? comm.world_size() : 1));
        DSV3_RETURN_IF_ERROR(
            StepOnThisRank(model, graphs, comm, m.batch, *cache, logits, m.mla_mode, nullptr));
        break;
      case ControlMessage::Kind::kMtpStep:
        DSV3_RETURN_IF_ERROR(CheckPlanFits(m.batch, model.config(), cache.get(),
                                           model.dp_attention() ? comm.world_size() : 1));
        DSV3_RETURN_IF_ERROR(MtpStepOnThisRank(model, comm, m.batch, {}, *cache, logits, nullptr));
        break;
    }
  }
}

}  // namespace dsv3
