// Timing helpers shared by dsv3-bench's sections (main.cc, verify_bench.cc).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "engine/backend/timing_backend.h"

namespace dsv3::bench {

inline float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0f : v[v.size() / 2];
}

// The mean of counts (0 for none): e.g. the experts each MoE layer activated.
inline double Mean(const std::vector<int64_t>& counts) {
  double sum = 0;
  for (int64_t c : counts) sum += static_cast<double>(c);
  return counts.empty() ? 0.0 : sum / static_cast<double>(counts.size());
}

// Milliseconds of the work enqueued on `stream` between Start() and StopMs() (which waits).
class StreamTimer {
 public:
  explicit StreamTimer(cudaStream_t stream) : stream_(stream) {
    cudaEventCreate(&start_);
    cudaEventCreate(&stop_);
  }
  ~StreamTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  StreamTimer(const StreamTimer&) = delete;
  StreamTimer& operator=(const StreamTimer&) = delete;
  void Start() { cudaEventRecord(start_, stream_); }
  float StopMs() {
    cudaEventRecord(stop_, stream_);
    cudaEventSynchronize(stop_);
    float ms = 0;
    cudaEventElapsedTime(&ms, start_, stop_);
    return ms;
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t start_, stop_;
};

// Median milliseconds of `work` over 10 timed runs after 2 warm-ups.
template <typename Work>
float MedianMs(cudaStream_t stream, Work&& work) {
  StreamTimer timer(stream);
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    timer.Start();
    work();
    const float t = timer.StopMs();
    if (i >= 2) ms.push_back(t);
  }
  return Median(ms);
}

// Medians (ms) of decode steps: per dense layer, per MoE layer (each the mean over its layers of
// the per-layer medians), and of the whole step.
struct StepTimes {
  float dense = 0, moe = 0, step = 0;
};

// Times `iters` calls of `step` (returns false when the step failed) after two warm-ups (with
// graphs: the measured run and the capture), the layers by `timed`'s layer marks (with graphs,
// event records captured in the step's graph), the step on `stream`. Layers [0, dense_layers)
// are dense, the next moe_layers MoE.
template <typename Step>
std::optional<StepTimes> TimeSteps(cudaStream_t stream, TimingBackend& timed, int iters,
                                   int dense_layers, int moe_layers, Step&& step) {
  const int layers = dense_layers + moe_layers;
  std::vector<std::vector<float>> per_layer(layers);
  std::vector<float> step_ms;
  StreamTimer timer(stream);
  timed.SetLayerTiming(true);
  for (int it = 0; it < iters + 2; ++it) {
    timer.Start();
    if (!step()) {
      timed.SetLayerTiming(false);
      return std::nullopt;
    }
    const float ms = timer.StopMs();
    const auto times = timed.LayerTimes();
    if (it < 2) continue;
    step_ms.push_back(ms);
    for (const auto& [layer, t] : times) {
      if (layer >= 0 && layer < layers) per_layer[layer].push_back(t);
    }
  }
  timed.SetLayerTiming(false);
  StepTimes t;
  for (int l = 0; l < layers && !per_layer[l].empty(); ++l) {
    (l < dense_layers ? t.dense : t.moe) +=
        Median(per_layer[l]) / (l < dense_layers ? dense_layers : moe_layers);
  }
  t.step = Median(step_ms);
  return t;
}

// Bytes of FP8 weights with their block scales.
inline double Fp8Bytes(double n, double k) { return n * k + (n / 128) * (k / 128) * 4; }

// What a MoE layer's decode step must read besides the active routed experts (one rank's share),
// and the bytes of one routed expert: the HBM floor is (attention + router + expert * (1 / tp +
// active experts) + KV bytes) / copy bandwidth.
struct MoeFloorBytes {
  double attention = 0, router = 0, expert = 0, tp = 1;
  double FloorMs(double active_experts, double kv_bytes, double copy_bw) const {
    return (attention + router + expert * (1 / tp + active_experts) + kv_bytes) / copy_bw * 1e3;
  }
};

}  // namespace dsv3::bench
