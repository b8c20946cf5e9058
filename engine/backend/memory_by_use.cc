#include "engine/backend/memory_by_use.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dsv3 {
namespace {

std::string GiB(int64_t bytes) { return absl::StrFormat("%.2f GiB", bytes / double(1 << 30)); }

}  // namespace

GpuMemoryByUse SplitGpuMemory(const DeviceMemory& memory, int64_t kv_cache_bytes,
                              int64_t graph_bytes) {
  GpuMemoryByUse m;
  m.device_total = memory.total;
  m.held = std::max<int64_t>(0, memory.free_at_start - memory.free);
  m.weights = memory.weight_bytes;
  m.kv_cache = kv_cache_bytes;
  m.cuda_graphs = graph_bytes;
  m.workspace = std::max<int64_t>(0, m.held - m.weights - m.kv_cache - m.cuda_graphs);
  return m;
}

std::string DescribeGpuMemory(const GpuMemoryByUse& memory) {
  std::string out = absl::StrCat("held ", GiB(memory.held), " of ", GiB(memory.device_total), ":");
  const char* separator = " ";
  for (const GpuMemoryUseField& use : kGpuMemoryUses) {
    absl::StrAppend(&out, separator, use.title, " ", GiB(memory.*use.bytes));
    separator = ", ";
  }
  return out;
}

}  // namespace dsv3
