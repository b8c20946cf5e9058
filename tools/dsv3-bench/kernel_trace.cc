#include "tools/dsv3-bench/kernel_trace.h"

#ifdef DSV3_HAVE_CUDA_BACKEND
#include <cuda_runtime_api.h>
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace dsv3::bench {

namespace {

std::mutex g_mu;
std::vector<TracedKernel> g_kernels;  // completed records, guarded by g_mu

// "void dsv3::kernels::(anonymous namespace)::Fp8MmaGemmKernel<2>(dsv3::...)" ->
// "Fp8MmaGemmKernel<2>"; library kernels keep their own names, cut to 64 characters.
std::string ShortName(const char* mangled) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && demangled != nullptr ? demangled : mangled;
  std::free(demangled);
  s = absl::StrReplaceAll(s, {{"dsv3::kernels::", ""}, {"(anonymous namespace)::", ""}});
  if (s.rfind("void ", 0) == 0) s.erase(0, 5);
  int depth = 0;  // the parameter list: the first '(' outside template arguments
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') ++depth;
    if (s[i] == '>') --depth;
    if (s[i] == '(' && depth == 0) {
      s.resize(i);
      break;
    }
  }
  if (s.size() > 64) s = s.substr(0, 61) + "...";
  return s;
}

void CUPTIAPI BufferRequested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = size_t{8} << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI BufferCompleted(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::vector<TracedKernel> kernels;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    kernels.push_back({ShortName(k->name), k->start, k->end});
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(g_mu);
  g_kernels.insert(g_kernels.end(), kernels.begin(), kernels.end());
}

absl::Status CuptiStatus(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return absl::OkStatus();
  const char* text = nullptr;
  cuptiGetResultString(r, &text);
  return absl::UnavailableError(absl::StrCat("CUPTI ", what, ": ", text ? text : "unknown"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<KernelTrace>> KernelTrace::Start() {
  // The buffer callbacks are the process's, registered once for every trace.
  static const absl::Status registered = CuptiStatus(
      cuptiActivityRegisterCallbacks(BufferRequested, BufferCompleted), "register callbacks");
  if (!registered.ok()) return registered;
  if (absl::Status s = CuptiStatus(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL),
                                   "enable kernel records");
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<KernelTrace>(new KernelTrace());
}

KernelTrace::~KernelTrace() {
  cudaDeviceSynchronize();
  cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(g_mu);
  g_kernels.clear();
}

std::vector<TracedKernel> KernelTrace::Take() {
  cudaDeviceSynchronize();
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::vector<TracedKernel> kernels;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    kernels.swap(g_kernels);
  }
  std::sort(kernels.begin(), kernels.end(),
            [](const TracedKernel& a, const TracedKernel& b) { return a.start_ns < b.start_ns; });
  return kernels;
}

void PrintKernelTrace(std::FILE* out, const std::string& title,
                      const std::vector<TracedKernel>& kernels) {
  std::fprintf(out, "\n### %s\n\n", title.c_str());
  if (kernels.empty()) {
    std::fprintf(out, "No kernels traced.\n");
    return;
  }
  const uint64_t begin = kernels.front().start_ns;
  uint64_t end = begin, busy = 0, covered_to = begin;
  struct Total {
    int launches = 0;
    double us = 0;
  };
  std::map<std::string, Total> totals;
  for (const TracedKernel& k : kernels) {
    end = std::max(end, k.end_ns);
    // Time covered by at least one kernel (PDL lets a kernel start before the last one ends).
    if (k.end_ns > covered_to) {
      busy += k.end_ns - std::max(k.start_ns, covered_to);
      covered_to = k.end_ns;
    }
    Total& t = totals[k.name];
    ++t.launches;
    t.us += (k.end_ns - k.start_ns) / 1e3;
  }
  const double span_us = (end - begin) / 1e3;
  std::fprintf(out,
               "%zu kernels over %.1f us: %.1f us with a kernel running, %.1f us between "
               "kernels.\n\n| kernel | launches | total us | mean us | %% of span |\n"
               "|---|---|---|---|---|\n",
               kernels.size(), span_us, busy / 1e3, span_us - busy / 1e3);
  std::vector<std::pair<std::string, Total>> sorted(totals.begin(), totals.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.us > b.second.us; });
  for (const auto& [name, t] : sorted) {
    std::fprintf(out, "| %s | %d | %.1f | %.2f | %.1f |\n", name.c_str(), t.launches, t.us,
                 t.us / t.launches, 100.0 * t.us / span_us);
  }
  std::fprintf(out, "\n| # | kernel | start us | us | gap before us |\n|---|---|---|---|---|\n");
  uint64_t previous_end = begin;
  for (size_t i = 0; i < kernels.size(); ++i) {
    const TracedKernel& k = kernels[i];
    const double gap = (static_cast<double>(k.start_ns) - static_cast<double>(previous_end)) / 1e3;
    std::fprintf(out, "| %zu | %s | %.1f | %.2f | %.2f |\n", i, k.name.c_str(),
                 (k.start_ns - begin) / 1e3, (k.end_ns - k.start_ns) / 1e3, gap);
    previous_end = std::max(previous_end, k.end_ns);
  }
}

}  // namespace dsv3::bench

#endif  // DSV3_HAVE_CUDA_BACKEND
