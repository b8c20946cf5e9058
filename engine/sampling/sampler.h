// Sampler: turns one sequence's logits row into a token, on the host.
//
// Order of operations (as in vLLM):
//   1. logprobs: log-softmax of the raw model logits (before penalties, masks and temperature),
//      like vLLM's default "raw_logprobs", so a token's reported logprob is the model's own and
//      does not change with sampling settings;
//   2. repetition penalty over tokens of the prompt or output; presence and frequency penalties
//      over the output;
//   3. while fewer than min_tokens tokens were output: EOS (unless ignore_eos) and the stop
//      token ids are masked;
//   4. greedy (temperature < kGreedyTemperature): argmax, lowest id on ties; otherwise
//      temperature, top-k, top-p, min-p, then one draw from the request's own generator.
// Every call draws exactly one number from the sequence's generator, greedy or not, so a
// sequence's tokens depend only on its seed, its logits and its own history, never on the batch.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"
#include "engine/sampling/random.h"
#include "engine/sampling/sampling_params.h"

namespace dsv3 {

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;

  friend bool operator==(const TokenLogprob&, const TokenLogprob&) = default;
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0;  // of `token`, from the raw logits; only when params.logprobs > 0
  std::vector<TokenLogprob> top_logprobs;  // params.logprobs most likely, best first
};

// What sampling needs to remember about one sequence: its generator and the token counts the
// penalties read. Lives as long as the request, across preemptions (recomputing KV does not
// resample), so that a preempted sequence resumes with the same tokens.
class SequenceSamplingState {
 public:
  // `seed`: the request's seed, or RandomSeed() when it has none.
  SequenceSamplingState(uint64_t seed, absl::Span<const int32_t> prompt_ids);
  static uint64_t RandomSeed();

  int32_t num_output_tokens() const { return num_output_tokens_; }
  // Output token -> occurrences.
  const absl::flat_hash_map<int32_t, int32_t>& output_counts() const { return output_counts_; }
  const absl::flat_hash_set<int32_t>& prompt_tokens() const { return prompt_tokens_; }

  // Records an output token (Sampler::Sample does it for the token it returns).
  void AppendOutput(int32_t token);
  SplitMix64& rng() { return rng_; }

 private:
  SplitMix64 rng_;
  absl::flat_hash_set<int32_t> prompt_tokens_;
  absl::flat_hash_map<int32_t, int32_t> output_counts_;
  int32_t num_output_tokens_ = 0;
};

class Sampler {
 public:
  // eos_token_ids: the model's end-of-sequence ids (ModelConfig::eos_token_ids).
  explicit Sampler(std::vector<int32_t> eos_token_ids);

  // Samples from `logits` ([vocab], not modified; vocab >= 1) under `params` (already validated),
  // advances `state` by one token and returns it with its logprobs. Holds scratch buffers: use
  // one Sampler per thread.
  SampledToken Sample(absl::Span<const float> logits, const SamplingParams& params,
                      SequenceSamplingState& state);

  // The distribution Sample draws from for `logits` under `params` and `state`, as probabilities
  // over the whole vocabulary (`probs`, resized here): one-hot at Sample's choice when greedy.
  // Draws nothing and changes no state. Speculative decoding compares these.
  void Probabilities(absl::Span<const float> logits, const SamplingParams& params,
                     const SequenceSamplingState& state, std::vector<float>& probs);
  // Records `token`, chosen some other way (speculative verification), as the next output of
  // `state` and returns it with its logprobs from the raw `logits`, as Sample would.
  SampledToken Take(absl::Span<const float> logits, int32_t token, const SamplingParams& params,
                    SequenceSamplingState& state);

 private:
  struct Candidate {
    float logit;  // after penalties, masks and temperature
    int32_t token;
    double weight;  // exp(logit - best logit): probability up to normalization
  };

  // logits_ := `logits` with penalties and the min_tokens mask applied.
  void Prepare(absl::Span<const float> logits, const SamplingParams& params,
               const SequenceSamplingState& state);
  // candidates_ := the tokens of logits_ that temperature, top-k, top-p and min-p keep, with
  // their weights; returns the weights' sum. Empty when every token is masked.
  double Filter(const SamplingParams& params);
  int32_t Draw(const SamplingParams& params, double u);

  std::vector<int32_t> eos_token_ids_;
  std::vector<float> logits_;  // [vocab] penalized and masked copy of the row
  std::vector<Candidate> candidates_;
};

}  // namespace dsv3
