#include "tools/dsv3-bench/kernel_trace.h"

#ifdef DSV3_HAVE_CUDA_BACKEND
#include <cuda_runtime_api.h>
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

const char* CopyName(uint8_t copy_kind) {
  switch (copy_kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "memcpy HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "memcpy DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "memcpy DtoD";
    default: return "memcpy";
  }
}

// The record as a TracedKernel, or nullopt for a kind the trace does not list (and runtime calls
// shorter than kLongHostCallNs).
std::optional<TracedKernel> Traced(const CUpti_Activity* record) {
  using Kind = TracedKernel::Kind;
  switch (record->kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      return TracedKernel{ShortName(k->name), k->start, k->end, Kind::kKernel};
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      return TracedKernel{CopyName(m->copyKind), m->start, m->end, Kind::kCopy, m->bytes};
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
      return TracedKernel{"memset", m->start, m->end, Kind::kCopy, m->bytes};
    }
    case CUPTI_ACTIVITY_KIND_RUNTIME: {
      const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(record);
      if (a->end - a->start < kLongHostCallNs) return std::nullopt;
      const char* name = nullptr;
      cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name);
      return TracedKernel{name != nullptr ? name : "runtime call", a->start, a->end,
                          Kind::kHostCall};
    }
    default: return std::nullopt;
  }
}

void CUPTIAPI BufferCompleted(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::vector<TracedKernel> kernels;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (std::optional<TracedKernel> k = Traced(record)) kernels.push_back(std::move(*k));
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(g_mu);
  g_kernels.insert(g_kernels.end(), kernels.begin(), kernels.end());
}

// " (16.0 KB)" for a copy or memset, nothing for a kernel.
std::string BytesNote(const TracedKernel& k) {
  if (k.kind != TracedKernel::Kind::kCopy) return "";
  return k.bytes >= (1u << 20) ? absl::StrFormat(" (%.1f MB)", k.bytes / 1048576.0)
                               : absl::StrFormat(" (%.1f KB)", k.bytes / 1024.0);
}

// Kernel records are the trace; copies, memsets and runtime calls are extras it lists when
// CUPTI gives them.
constexpr CUpti_ActivityKind kExtraKinds[] = {
    CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET, CUPTI_ACTIVITY_KIND_RUNTIME};

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
  for (CUpti_ActivityKind kind : kExtraKinds) cuptiActivityEnable(kind);
  return std::unique_ptr<KernelTrace>(new KernelTrace());
}

KernelTrace::~KernelTrace() {
  cudaDeviceSynchronize();
  cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  for (CUpti_ActivityKind kind : kExtraKinds) cuptiActivityDisable(kind);
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
                      const std::vector<TracedKernel>& traced) {
  std::fprintf(out, "\n### %s\n\n", title.c_str());
  std::vector<TracedKernel> gpu, host;  // kernels and copies; long host calls
  for (const TracedKernel& k : traced) {
    (k.kind == TracedKernel::Kind::kHostCall ? host : gpu).push_back(k);
  }
  if (gpu.empty()) {
    std::fprintf(out, "No kernels traced.\n");
    return;
  }
  const uint64_t begin = gpu.front().start_ns;
  uint64_t end = begin, busy = 0, covered_to = begin;
  int64_t copies = 0;
  struct Total {
    int launches = 0;
    double us = 0;
  };
  std::map<std::string, Total> totals;
  for (const TracedKernel& k : gpu) {
    end = std::max(end, k.end_ns);
    copies += k.kind == TracedKernel::Kind::kCopy ? 1 : 0;
    // Time covered by at least one kernel or copy (PDL lets a kernel start before the last one
    // ends).
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
               "%zu kernels and %lld copies or memsets over %.1f us: %.1f us with one running, "
               "%.1f us between them.\n\n| kernel or copy | launches | total us | mean us | "
               "%% of span |\n|---|---|---|---|---|\n",
               gpu.size() - copies, static_cast<long long>(copies), span_us, busy / 1e3,
               span_us - busy / 1e3);
  std::vector<std::pair<std::string, Total>> sorted(totals.begin(), totals.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.us > b.second.us; });
  for (const auto& [name, t] : sorted) {
    std::fprintf(out, "| %s | %d | %.1f | %.2f | %.1f |\n", name.c_str(), t.launches, t.us,
                 t.us / t.launches, 100.0 * t.us / span_us);
  }
  std::fprintf(out,
               "\n| # | kernel or copy | start us | us | gap before us |\n|---|---|---|---|---|\n");
  uint64_t previous_end = begin;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const TracedKernel& k = gpu[i];
    const double gap = (static_cast<double>(k.start_ns) - static_cast<double>(previous_end)) / 1e3;
    std::fprintf(out, "| %zu | %s%s | %.1f | %.2f | %.2f |\n", i, k.name.c_str(),
                 BytesNote(k).c_str(), (k.start_ns - begin) / 1e3, (k.end_ns - k.start_ns) / 1e3,
                 gap);
    previous_end = std::max(previous_end, k.end_ns);
  }
  // What the host was doing in the long gaps: its runtime calls of kLongHostCallNs or more that
  // overlap the span (start relative to the first kernel; a call may begin before it).
  std::fprintf(out, "\nHost runtime calls of %.0f us or more inside the span:\n\n",
               kLongHostCallNs / 1e3);
  std::fprintf(out, "| call | start us | us |\n|---|---|---|\n");
  int listed = 0;
  for (const TracedKernel& h : host) {
    if (h.end_ns < begin || h.start_ns > end) continue;
    ++listed;
    std::fprintf(out, "| %s | %.1f | %.2f |\n", h.name.c_str(),
                 (static_cast<double>(h.start_ns) - static_cast<double>(begin)) / 1e3,
                 (h.end_ns - h.start_ns) / 1e3);
  }
  if (listed == 0) std::fprintf(out, "| none | | |\n");
}

}  // namespace dsv3::bench

#endif  // DSV3_HAVE_CUDA_BACKEND
