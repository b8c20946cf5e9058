// The scheduler driven like the engine drives it, against a fake model whose KV cache records the
// token id written at each slot and whose logits depend only on the tokens it reads back from
// that cache. If a block table pointed at the wrong blocks, a prefix hit shared the wrong block, or
// a preempted sequence recomputed the wrong tokens, the cache check fails or the output changes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/stop_checker.h"
#include "engine/scheduler/scheduler.h"

namespace dsv3::scheduler_workload_test {
namespace {

constexpr int32_t kVocab = 48;
constexpr int32_t kEos = 0;

struct Request {
  SequenceId id;
  int32_t arrival_step;
  std::vector<int32_t> prompt;
  SamplingParams params;
};

struct RunConfig {
  int32_t num_blocks;
  int32_t block_size = 4;
  SchedulerConfig scheduler;
  // Request ids to abort at a step: id -> step.
  std::map<SequenceId, int32_t> aborts = {};
};

struct Outcome {
  std::map<SequenceId, std::vector<int32_t>> outputs;  // finished requests only
  SchedulerStats stats;
  BlockPoolStats pool;
};

// Logits of the next token after `context`: a fixed pseudo-random function of the whole context.
std::vector<float> FakeLogits(const std::vector<int32_t>& context) {
  uint64_t h = 1469598103934665603ULL;
  for (int32_t t : context) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ULL;
  SplitMix64 mix(h);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = static_cast<float>(mix.NextUniform() * 6);
  logits[kEos] -= 2;  // sequences run a while before EOS
  return logits;
}

// Requests with prompts built from a few shared prefixes, so that prefix caching has hits.
std::vector<Request> MakeRequests(int n, uint64_t seed) {
  SplitMix64 rng(seed);
  const auto uniform = [&](int lo, int hi) {  // [lo, hi]
    return lo + static_cast<int>(rng.Next() % static_cast<uint64_t>(hi - lo + 1));
  };
  // Lengths 20 (a multiple of both block sizes used below), then random.
  std::vector<std::vector<int32_t>> prefixes(3);
  for (size_t k = 0; k < prefixes.size(); ++k) {
    for (int i = k == 0 ? 20 : uniform(4, 14); i > 0; --i) {
      prefixes[k].push_back(uniform(1, kVocab - 1));
    }
  }
  std::vector<Request> requests;
  for (int i = 0; i < n; ++i) {
    Request r;
    r.id = 100 + i;
    r.arrival_step = uniform(0, 12);
    if (i > 0 && uniform(0, 3) == 0) {
      r.prompt = requests[uniform(0, i - 1)].prompt;  // the same prompt again: full prefix hits
    } else {
      if (uniform(0, 3) > 0) r.prompt = prefixes[uniform(0, 2)];
      for (int j = uniform(r.prompt.empty() ? 1 : 0, 12); j > 0; --j) {
        r.prompt.push_back(uniform(1, kVocab - 1));
      }
    }
    r.params.max_tokens = uniform(1, 16);
    r.params.min_tokens = uniform(0, r.params.max_tokens);
    r.params.seed = rng.Next();
    r.params.temperature = uniform(0, 3) == 0 ? 0.0f : 0.8f;
    r.params.top_p = 0.9f;
    requests.push_back(std::move(r));
  }
  return requests;
}

Outcome RunEngine(const std::vector<Request>& requests, const RunConfig& config) {
  BlockPool pool(config.num_blocks, config.block_size, BlockHasher({9, 8, 7, 6}));
  Scheduler scheduler(config.scheduler, pool);
  std::vector<int32_t> kv(config.num_blocks * config.block_size, -1);  // slot -> token id
  const auto slot = [&](const std::vector<BlockId>& table, int32_t position) -> int32_t& {
    return kv[table[position / config.block_size] * config.block_size +
              position % config.block_size];
  };
  Sampler sampler({kEos});
  std::map<SequenceId, const Request*> by_id;
  std::map<SequenceId, SequenceSamplingState> sampling;
  std::map<SequenceId, StopChecker> stops;
  Outcome outcome;

  size_t num_added = 0;
  for (int32_t step = 0; num_added < requests.size() || scheduler.HasWork(); ++step) {
    SCOPED_TRACE(absl::StrCat("step ", step));
    EXPECT_LT(step, 10000) << "no progress";
    if (step >= 10000) break;
    for (const Request& r : requests) {
      if (r.arrival_step != step) continue;
      EXPECT_TRUE(scheduler.AddSequence(r.id, r.prompt, r.params.max_tokens).ok());
      by_id[r.id] = &r;
      sampling.try_emplace(r.id, *r.params.seed, r.prompt);
      stops.try_emplace(r.id, r.params, std::vector<int32_t>{kEos});
      ++num_added;
    }
    for (const auto& [id, abort_step] : config.aborts) {
      if (abort_step == step && scheduler.Find(id) != nullptr) {
        EXPECT_TRUE(scheduler.Abort(id).ok());
      }
    }

    const StepPlan plan = scheduler.Schedule();
    EXPECT_LE(plan.num_tokens(), config.scheduler.max_batched_tokens);
    // The fake model runs the batch: every sequence reads its context from the cache (which
    // must hold its own tokens), then the new tokens are written, then the logits rows are
    // computed from what each row's sequence sees. No row sees another sequence's new tokens.
    const ForwardBatch batch = plan.ToForwardBatch();
    std::vector<std::vector<int32_t>> contexts(batch.sequences.size());
    for (size_t i = 0; i < batch.sequences.size(); ++i) {
      const SequenceSlice& slice = batch.sequences[i];
      const Sequence& seq = *scheduler.Find(plan.sequences[i].id);
      EXPECT_GT(slice.num_tokens, 0);
      for (int32_t p = 0; p < slice.context_begin; ++p) {
        contexts[i].push_back(slot(slice.block_table, p));
        EXPECT_EQ(contexts[i].back(), seq.token_ids()[p])
            << "sequence " << seq.id() << " pos " << p;
      }
      for (int32_t j = 0; j < slice.num_tokens; ++j) {
        EXPECT_EQ(batch.token_ids[slice.token_begin + j], seq.token_ids()[slice.context_begin + j]);
      }
    }
    for (const SequenceSlice& slice : batch.sequences) {
      for (int32_t j = 0; j < slice.num_tokens; ++j) {
        slot(slice.block_table, slice.context_begin + j) = batch.token_ids[slice.token_begin + j];
      }
    }
    std::vector<int32_t> sampled;
    for (int32_t row : batch.logits_rows) {
      size_t i = 0;
      while (row >= batch.sequences[i].token_begin + batch.sequences[i].num_tokens) ++i;
      const SequenceSlice& slice = batch.sequences[i];
      std::vector<int32_t> context = contexts[i];
      context.insert(context.end(), batch.token_ids.begin() + slice.token_begin,
                     batch.token_ids.begin() + row + 1);
      const SequenceId id = plan.sequences[i].id;
      EXPECT_TRUE(plan.sequences[i].sample);
      sampled.push_back(
          sampler.Sample(FakeLogits(context), by_id[id]->params, sampling.at(id)).token);
    }
    scheduler.CommitStep(plan, sampled);
    for (const ScheduledSequence& entry : plan.sequences) {
      if (!entry.sample) continue;
      const Sequence& seq = *scheduler.Find(entry.id);
      if (stops.at(entry.id).Append(seq.output_ids().back(), "").finished()) {
        outcome.outputs[entry.id].assign(seq.output_ids().begin(), seq.output_ids().end());
        EXPECT_TRUE(scheduler.Finish(entry.id).ok());
      }
    }
    const absl::Status invariants = scheduler.CheckInvariants();
    EXPECT_TRUE(invariants.ok()) << invariants;
    if (!invariants.ok()) break;
  }
  outcome.stats = scheduler.stats();
  outcome.pool = pool.stats();
  return outcome;
}

SchedulerConfig Config(int32_t max_batched_tokens, int32_t max_running_seqs, bool caching) {
  SchedulerConfig c;
  c.max_batched_tokens = max_batched_tokens;
  c.max_running_seqs = max_running_seqs;
  c.enable_prefix_caching = caching;
  return c;
}

void ExpectDrained(const Outcome& o) {
  EXPECT_EQ(o.pool.num_used, 0);
  EXPECT_EQ(o.pool.num_free + o.pool.num_evictable, o.pool.num_blocks);
  EXPECT_EQ(o.stats.num_waiting + o.stats.num_running, 0);
}

// Requests served one at a time in a roomy cache are the reference; every other configuration
// (batching, small budgets that chunk prefills, caches small enough to preempt, prefix caching
// on or off) must give every request the same tokens.
TEST(SchedulerWorkloadTest, OutputsDoNotDependOnBatchingChunkingPreemptionOrCaching) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    const std::vector<Request> requests = MakeRequests(24, seed);
    const Outcome reference =
        RunEngine(requests, {.num_blocks = 256, .scheduler = Config(64, 1, false)});
    ASSERT_EQ(reference.outputs.size(), requests.size());
    ExpectDrained(reference);
    EXPECT_EQ(reference.stats.num_preemptions, 0);

    struct Row {
      const char* name;
      RunConfig config;
      bool expect_preemptions;
    };
    const Row rows[] = {
        {"batched", {.num_blocks = 256, .scheduler = Config(64, 16, true)}, false},
        {"chunked", {.num_blocks = 256, .scheduler = Config(8, 8, true)}, false},
        {"preempting", {.num_blocks = 12, .scheduler = Config(32, 16, true)}, true},
        {"preempting, no cache", {.num_blocks = 12, .scheduler = Config(32, 16, false)}, true},
        {"preempting, chunked",
         {.num_blocks = 10, .block_size = 5, .scheduler = Config(6, 6, true)},
         true},
    };
    for (const Row& row : rows) {
      SCOPED_TRACE(row.name);
      const Outcome o = RunEngine(requests, row.config);
      EXPECT_EQ(o.outputs, reference.outputs);
      if (row.expect_preemptions) {
        EXPECT_GT(o.stats.num_preemptions, 0);
      }
      if (row.config.scheduler.enable_prefix_caching) {
        EXPECT_GT(o.pool.prefix_hit_blocks, 0);
      }
      ExpectDrained(o);
    }
  }
}

TEST(SchedulerWorkloadTest, AbortsAtAnyPointLeaveOnlyFreeOrCachedBlocks) {
  const std::vector<Request> requests = MakeRequests(24, 7);
  for (int32_t shift = 0; shift < 12; ++shift) {
    SCOPED_TRACE(absl::StrCat("shift ", shift));
    RunConfig config{.num_blocks = 12, .scheduler = Config(8, 4, true)};
    for (size_t i = 0; i < requests.size(); i += 2) {
      config.aborts[requests[i].id] = requests[i].arrival_step + shift;
    }
    const Outcome o = RunEngine(requests, config);
    EXPECT_GT(o.stats.num_aborted, 0);
    EXPECT_EQ(o.stats.num_aborted + o.stats.num_finished, static_cast<int64_t>(requests.size()));
    ExpectDrained(o);
  }
}

}  // namespace
}  // namespace dsv3::scheduler_workload_test
