// KernelTrace: the kernels, copies and memsets the GPU runs while a trace is on, each with its
// start and end (CUPTI activity records: a graph replay reports every kernel node), and the
// host's CUDA runtime calls that took long, for dsv3-bench's tables of one step: which kernels
// the step's time goes to, how much goes to the gaps between them, and what the host was doing
// in the long ones. CUPTI's activity API is process-wide: one trace at a time. Tracing adds a
// little to each launch and runtime call; the step's own timing is measured without it.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3::bench {

// A host runtime call is listed when it takes at least this long (shorter ones are launches).
constexpr uint64_t kLongHostCallNs = 20'000;

struct TracedKernel {
  enum class Kind { kKernel, kCopy, kHostCall };
  // Kernels: demangled, without namespaces and parameters; copies: "memcpy HtoD", "memset", ...;
  // host calls: the runtime function ("cudaStreamSynchronize").
  std::string name;
  uint64_t start_ns = 0, end_ns = 0;  // host calls on the host's clock, which CUPTI aligns
  Kind kind = Kind::kKernel;
  uint64_t bytes = 0;  // copies and memsets
};

class KernelTrace {
 public:
  // Fails when CUPTI cannot trace (no library, another tracer holds it).
  static absl::StatusOr<std::unique_ptr<KernelTrace>> Start();
  ~KernelTrace();  // stops tracing
  KernelTrace(const KernelTrace&) = delete;
  KernelTrace& operator=(const KernelTrace&) = delete;

  // Every kernel, copy and long host call since the last Take (or Start), in start order; waits
  // for the device.
  std::vector<TracedKernel> Take();

 private:
  KernelTrace() = default;
};

// `kernels` of one step: per kernel or copy name (launches, total and mean us, share of the
// span), then the step's span, its time with the GPU busy and between, then every kernel and
// copy in order with the gap before it; then the long host calls inside the span.
void PrintKernelTrace(std::FILE* out, const std::string& title,
                      const std::vector<TracedKernel>& kernels);

}  // namespace dsv3::bench
