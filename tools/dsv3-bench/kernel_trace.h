// KernelTrace: the kernels the GPU runs while a trace is on, each with its start and end
// (CUPTI activity records: a graph replay reports every kernel node), for dsv3-bench's tables
// of one graphed decode step: which kernels the step's time goes to, and how much goes to the
// gaps between them. CUPTI's activity API is process-wide: one trace at a time. Tracing adds
// a little to each kernel's launch; the step's own timing is measured without it.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3::bench {

struct TracedKernel {
  std::string name;  // demangled, without namespaces and parameters
  uint64_t start_ns = 0, end_ns = 0;
};

class KernelTrace {
 public:
  // Fails when CUPTI cannot trace (no library, another tracer holds it).
  static absl::StatusOr<std::unique_ptr<KernelTrace>> Start();
  ~KernelTrace();  // stops tracing
  KernelTrace(const KernelTrace&) = delete;
  KernelTrace& operator=(const KernelTrace&) = delete;

  // Every kernel that ran since the last Take (or Start), in start order; waits for the device.
  std::vector<TracedKernel> Take();

 private:
  KernelTrace() = default;
};

// `kernels` of one step: per kernel name (launches, total and mean us, share of the span), then
// the step's span, its time in kernels and between them, then every kernel in order with the
// gap before it.
void PrintKernelTrace(std::FILE* out, const std::string& title,
                      const std::vector<TracedKernel>& kernels);

}  // namespace dsv3::bench
