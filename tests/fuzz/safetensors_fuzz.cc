// libFuzzer target over a safetensors file: arbitrary bytes opened by SafetensorsFile (header
// length, JSON, dtypes, shapes, offsets) and, when accepted, every tensor read end to end
// through the load-time value checks. A view past the mapping faults; an accepted file with
// overlapping or oversized ranges traps.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/weights/safetensors.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An in-memory file: SafetensorsFile maps a path.
  const int fd = memfd_create("safetensors", MFD_CLOEXEC);
  Check(fd >= 0);
  Check(write(fd, data, size) == static_cast<ssize_t>(size));
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto file = dsv3::SafetensorsFile::Open(path);
  if (file.ok()) {
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    uint64_t sum = 0;
    for (const dsv3::SafetensorsEntry& e : (*file)->entries()) {
      Check((*file)->Find(e.name) == &e);
      const dsv3::TensorView v = (*file)->View(e);
      Check(static_cast<uint64_t>(v.nbytes()) == e.end - e.begin);
      const auto* bytes = static_cast<const uint8_t*>(v.data);
      for (uint64_t i = 0; i < e.end - e.begin; ++i) sum += bytes[i];  // faults past the map
      if (e.end > e.begin) ranges.emplace_back(e.begin, e.end);
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) Check(ranges[i].first >= ranges[i - 1].second);
    (void)sum;
  }
  close(fd);
  return 0;
}
