#include "engine/backend/cuda/pinned_host_allocator.h"

#include <cuda_runtime_api.h>
#include <sys/mman.h>

#include <map>
#include <memory>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

namespace {

class BackgroundPinnedAllocator final : public Allocator {
 public:
  void* Allocate(int64_t bytes) override {
    const size_t size = bytes > 0 ? static_cast<size_t>(bytes) : 1;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    // The registering thread must use the caller's device: a thread starts on device 0, and a
    // rank on another GPU would otherwise create a context on GPU 0.
    int device = 0;
    cudaGetDevice(&device);
    auto pinning = std::make_unique<Pinning>();
    pinning->bytes = size;
    Pinning* raw = pinning.get();
    pinning->thread = std::thread([p, size, device, raw] {
      const absl::Time start = absl::Now();
      cudaSetDevice(device);
      raw->pinned = cudaHostRegister(p, size, cudaHostRegisterPortable) == cudaSuccess;
      if (!raw->pinned) {
        spdlog::warn("loading: cannot pin {:.0f} MB of staging memory ({}); copies to the GPU "
                     "go through the driver's bounce buffer",
                     size / 1e6, cudaGetErrorString(cudaGetLastError()));
        return;
      }
      spdlog::debug("loading: pinned {:.0f} MB of staging memory in {:.2f} s", size / 1e6,
                    absl::ToDoubleSeconds(absl::Now() - start));
    });
    absl::MutexLock lock(&mu_);
    pinnings_[p] = std::move(pinning);
    return p;
  }

  void Free(void* p) override {
    std::unique_ptr<Pinning> pinning;
    {
      absl::MutexLock lock(&mu_);
      auto it = pinnings_.find(p);
      if (it == pinnings_.end()) return;
      pinning = std::move(it->second);
      pinnings_.erase(it);
    }
    pinning->thread.join();
    if (pinning->pinned) cudaHostUnregister(p);
    munmap(p, pinning->bytes);
  }

  Device device() const override { return Device::kCpu; }

 private:
  struct Pinning {
    size_t bytes = 0;
    std::thread thread;
    bool pinned = false;  // written by `thread`, read after joining it
  };
  absl::Mutex mu_;
  std::map<void*, std::unique_ptr<Pinning>> pinnings_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

Allocator* PinnedHostAllocator() {
  static BackgroundPinnedAllocator allocator;
  return &allocator;
}

}  // namespace dsv3
