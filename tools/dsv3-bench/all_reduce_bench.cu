// Times the custom all-reduce (kernels/custom_all_reduce.cu) against NCCL at the messages the
// model all-reduces in decode steps: one token's hidden state in BF16 (14 KB) and F32 (28 KB),
// then F32 at 4, 16, 64 and 256 tokens (112 KB to 7 MB). One process, one thread per GPU, the
// peers' buffers addressed directly with peer access (cudaIpcOpenMemHandle does not open a
// process's own handles; the engine uses IPC between its rank processes). Each rank captures
// 100 all-reduces of one message into a CUDA graph; the graphs are replayed on all GPUs at once
// and the median replay / 100 is reported (the slowest rank's), for the one-shot and two-shot
// algorithms and ncclAllReduce. Before timing, every message is checked: the custom result must
// equal the rank-order F32 sum bit for bit on every rank, and is compared with NCCL's (bit for
// bit at 2 GPUs, where both are a + b; the largest relative difference otherwise).
// With one GPU, N = 2, 4, 8 ranks are simulated on it (streams of their own, grids of 4 blocks so
// they are resident together): a check that the path runs, not NVLink's timing.
//
// Built as dsv3-all-reduce-bench with the CUDA backend (tools/CMakeLists.txt). Usage:
//   dsv3-all-reduce-bench [--gpus N] [--blocks B] [--replays R]
// --gpus: GPUs to use (default all visible, at most 8); --blocks: the custom kernel's grid cap
// (default kPeerAllReduceBlocks, as the engine); --replays: timed replays (default 20).
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/backend/dtype.h"
#include "kernels/custom_all_reduce.cuh"
#include "kernels/launch_check.h"

namespace {

using dsv3::kernels::ElemType;
using dsv3::kernels::PeerAllReduce;
using dsv3::kernels::PeerAllReduceParams;
using dsv3::kernels::PeerAllReduceSignal;

#define NCCL_CHECK(expr)                                                        \
  do {                                                                          \
    const ncclResult_t _r = (expr);                                             \
    if (_r != ncclSuccess) {                                                    \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, \
                   ncclGetErrorString(_r));                                     \
      std::abort();                                                             \
    }                                                                           \
  } while (0)

constexpr int64_t kStagingBytes = int64_t{8} << 20;  // as CustomAllReduce::kDefaultMaxBytes
constexpr int64_t kHidden = 7168;
constexpr int kPerGraph = 100;
constexpr int kSimulatedBlocks = 4;

struct Message {
  const char* what;
  int64_t n;
  ElemType type;
  int64_t bytes() const { return n * (type == ElemType::kBF16 ? 2 : 4); }
};
const Message kMessages[] = {
    {"1 token, BF16", kHidden, ElemType::kBF16},
    {"1 token, F32", kHidden, ElemType::kF32},
    {"4 tokens, F32", 4 * kHidden, ElemType::kF32},
    {"16 tokens, F32", 16 * kHidden, ElemType::kF32},
    {"64 tokens, F32", 64 * kHidden, ElemType::kF32},
    {"256 tokens, F32", 256 * kHidden, ElemType::kF32},
};

struct Options {
  int gpus = 0;  // 0: all visible, at most 8
  int blocks = dsv3::kernels::kPeerAllReduceBlocks;
  int replays = 20;
};

// One rank: a GPU, or in simulated mode a share of GPU 0.
struct Rank {
  int device = 0;
  cudaStream_t stream = nullptr;
  void* staging = nullptr;
  PeerAllReduceSignal* signal = nullptr;
  void* data = nullptr;       // checked custom all-reduces
  void* nccl_data = nullptr;  // the same inputs through NCCL
  void* zeros = nullptr;      // the timed all-reduces (a sum of zeros stays zeros)
  ncclComm_t comm = nullptr;
};

// Simple reusable barrier for the rank threads (the benches build as C++17).
class ThreadBarrier {
 public:
  explicit ThreadBarrier(int n) : n_(n) {}
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const int generation = generation_;
    if (++waiting_ == n_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation != generation_; });
    }
  }

 private:
  const int n_;
  int waiting_ = 0, generation_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
};

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Rank r's inputs, exactly representable in the message's type; magnitudes 2^-8..2^8.
std::vector<float> Inputs(const Message& m, int r) {
  std::vector<float> v(m.n);
  for (int64_t i = 0; i < m.n; ++i) {
    const uint64_t bits = Mix(static_cast<uint64_t>(r) * 0x100000001b3ull + i);
    const float x = std::ldexp(static_cast<float>(bits >> 40) * 0x1p-24f * 4.0f - 2.0f,
                               static_cast<int>(bits & 15) - 8);
    v[i] = m.type == ElemType::kBF16 ? dsv3::Bf16ToF32(dsv3::F32ToBf16(x)) : x;
  }
  return v;
}
std::vector<char> Bytes(const std::vector<float>& v, ElemType type) {
  std::vector<char> out(v.size() * (type == ElemType::kBF16 ? 2 : 4));
  for (size_t i = 0; i < v.size(); ++i) {
    if (type == ElemType::kBF16) {
      const uint16_t b = dsv3::F32ToBf16(v[i]);
      std::memcpy(out.data() + 2 * i, &b, 2);
    } else {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    }
  }
  return out;
}
float ValueAt(const std::vector<char>& bytes, int64_t i, ElemType type) {
  if (type == ElemType::kBF16) {
    uint16_t b;
    std::memcpy(&b, bytes.data() + 2 * i, 2);
    return dsv3::Bf16ToF32(b);
  }
  float f;
  std::memcpy(&f, bytes.data() + 4 * i, 4);
  return f;
}

std::vector<char> Download(const void* p, int64_t bytes) {
  std::vector<char> host(bytes);
  DSV3_CUDA_CHECK(cudaMemcpy(host.data(), p, bytes, cudaMemcpyDeviceToHost));
  return host;
}

class Bench {
 public:
  Bench(const Options& options, int world, bool simulated)
      : options_(options), world_(world), simulated_(simulated), ranks_(world) {
    DSV3_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&abort_), sizeof(uint32_t),
                                  cudaHostAllocMapped | cudaHostAllocPortable));
    *abort_ = 0;
    for (int r = 0; r < world; ++r) {
      Rank& k = ranks_[r];
      k.device = simulated ? 0 : r;
      DSV3_CUDA_CHECK(cudaSetDevice(k.device));
      if (!simulated) {
        for (int peer = 0; peer < world; ++peer) {
          int can = 0;
          DSV3_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, r, peer));
          if (peer != r && !can) {
            std::fprintf(stderr, "GPU %d cannot access GPU %d's memory\n", r, peer);
            std::exit(1);
          }
          if (peer != r) DSV3_CUDA_CHECK(cudaDeviceEnablePeerAccess(peer, 0));
        }
      }
      DSV3_CUDA_CHECK(cudaStreamCreateWithFlags(&k.stream, cudaStreamNonBlocking));
      DSV3_CUDA_CHECK(cudaMalloc(&k.staging, 2 * kStagingBytes));
      DSV3_CUDA_CHECK(cudaMalloc(&k.signal, sizeof(PeerAllReduceSignal)));
      DSV3_CUDA_CHECK(cudaMemset(k.signal, 0, sizeof(PeerAllReduceSignal)));
      DSV3_CUDA_CHECK(cudaMalloc(&k.data, kStagingBytes));
      DSV3_CUDA_CHECK(cudaMalloc(&k.nccl_data, kStagingBytes));
      DSV3_CUDA_CHECK(cudaMalloc(&k.zeros, kStagingBytes));
      DSV3_CUDA_CHECK(cudaMemset(k.zeros, 0, kStagingBytes));
      DSV3_CUDA_CHECK(cudaDeviceSynchronize());
    }
    if (!simulated) {
      std::vector<ncclComm_t> comms(world);
      std::vector<int> devices(world);
      for (int r = 0; r < world; ++r) devices[r] = r;
      NCCL_CHECK(ncclCommInitAll(comms.data(), world, devices.data()));
      for (int r = 0; r < world; ++r) ranks_[r].comm = comms[r];
    }
  }

  ~Bench() {
    for (Rank& k : ranks_) {
      cudaSetDevice(k.device);
      cudaDeviceSynchronize();
      if (k.comm != nullptr) ncclCommDestroy(k.comm);
      cudaStreamDestroy(k.stream);
      for (void* p : {k.staging, static_cast<void*>(k.signal), k.data, k.nccl_data, k.zeros}) {
        cudaFree(p);
      }
    }
    cudaFreeHost(abort_);
  }

  // Prints the table; false when a check failed.
  bool Run() {
    bool ok = true;
    std::printf(
        "| message | bytes | one-shot us | two-shot us | NCCL us | engine picks | "
        "custom = rank-order sum | custom vs NCCL |\n|---|---|---|---|---|---|---|---|\n");
    for (const Message& m : kMessages) {
      std::string exact = "yes", vs_nccl = simulated_ ? "-" : "";
      for (bool two_shot : {false, true}) {
        const std::string e = CheckCustom(m, two_shot, two_shot ? nullptr : &vs_nccl);
        if (!e.empty()) exact = e;
      }
      ok = ok && exact == "yes" && (world_ != 2 || simulated_ || vs_nccl == "bitwise");
      const double one = TimeUs([&](int r) { LaunchCustom(r, m, false, ranks_[r].zeros); });
      const double two = TimeUs([&](int r) { LaunchCustom(r, m, true, ranks_[r].zeros); });
      std::string nccl = "-";
      if (!simulated_) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.1f",
                      TimeUs([&](int r) { LaunchNccl(r, m, ranks_[r].zeros); }));
        nccl = buf;
      }
      std::printf("| %s | %ld | %.1f | %.1f | %s | %s | %s | %s |\n", m.what,
                  static_cast<long>(m.bytes()), one, two, nccl.c_str(),
                  dsv3::kernels::PeerAllReduceTwoShot(m.bytes(), world_) ? "two-shot" : "one-shot",
                  exact.c_str(), vs_nccl.c_str());
      std::fflush(stdout);
    }
    return ok;
  }

 private:
  void LaunchCustom(int r, const Message& m, bool two_shot, void* data) {
    PeerAllReduceParams p{};
    p.data = data;
    p.n = m.n;
    p.type = m.type;
    p.rank = r;
    p.world = world_;
    for (int q = 0; q < world_; ++q) {
      p.staging[q] = ranks_[q].staging;
      p.signals[q] = ranks_[q].signal;
    }
    p.staging_bytes = kStagingBytes;
    p.abort = abort_;
    p.two_shot = two_shot;
    p.max_blocks = simulated_ ? kSimulatedBlocks : options_.blocks;
    PeerAllReduce(p, ranks_[r].stream);
  }
  void LaunchNccl(int r, const Message& m, void* data) {
    NCCL_CHECK(ncclAllReduce(data, data, m.n,
                             m.type == ElemType::kBF16 ? ncclBfloat16 : ncclFloat32, ncclSum,
                             ranks_[r].comm, ranks_[r].stream));
  }

  // fn(r) for every rank at once, then waits for every rank's stream. GPUs: a thread per rank
  // (its device current); simulated: the launches one after another, which run concurrently.
  void OnEveryRank(const std::function<void(int)>& fn) {
    if (simulated_) {
      for (int r = 0; r < world_; ++r) fn(r);
      for (const Rank& k : ranks_) DSV3_CUDA_CHECK(cudaStreamSynchronize(k.stream));
      return;
    }
    std::vector<std::thread> threads;
    for (int r = 0; r < world_; ++r) {
      threads.emplace_back([&, r] {
        DSV3_CUDA_CHECK(cudaSetDevice(r));
        fn(r);
        DSV3_CUDA_CHECK(cudaStreamSynchronize(ranks_[r].stream));
      });
    }
    for (std::thread& t : threads) t.join();
  }

  // Runs the custom all-reduce (and, when `vs_nccl` is given, NCCL) on fresh inputs. Returns
  // "" when every rank holds the rank-order sum bit for bit, else where it differs; `vs_nccl`
  // gets "bitwise" or the largest relative difference from NCCL's result.
  std::string CheckCustom(const Message& m, bool two_shot, std::string* vs_nccl) {
    std::vector<std::vector<float>> inputs(world_);
    for (int r = 0; r < world_; ++r) {
      inputs[r] = Inputs(m, r);
      const std::vector<char> bytes = Bytes(inputs[r], m.type);
      DSV3_CUDA_CHECK(
          cudaMemcpy(ranks_[r].data, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
      DSV3_CUDA_CHECK(
          cudaMemcpy(ranks_[r].nccl_data, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
    }
    // A pageable copy may still be in flight when cudaMemcpy returns, and the ranks' streams do
    // not wait for the legacy stream.
    for (const Rank& k : ranks_) {
      DSV3_CUDA_CHECK(cudaSetDevice(k.device));
      DSV3_CUDA_CHECK(cudaDeviceSynchronize());
    }
    OnEveryRank([&](int r) {
      LaunchCustom(r, m, two_shot, ranks_[r].data);
      if (vs_nccl != nullptr && !simulated_) LaunchNccl(r, m, ranks_[r].nccl_data);
    });
    std::vector<float> sum = inputs[0];
    for (int r = 1; r < world_; ++r) {
      for (int64_t i = 0; i < m.n; ++i) sum[i] += inputs[r][i];
    }
    const std::vector<char> want = Bytes(sum, m.type);
    std::string verdict;
    double worst = 0;
    bool bitwise = true;
    for (int r = 0; r < world_; ++r) {
      const std::vector<char> got = Download(ranks_[r].data, m.bytes());
      if (verdict.empty() && got != want) {
        const int64_t elem = m.bytes() / m.n;
        int64_t i = 0;
        while (std::memcmp(got.data() + i * elem, want.data() + i * elem, elem) == 0) ++i;
        verdict = "NO: rank " + std::to_string(r) + (two_shot ? " two-shot" : " one-shot") +
                  " element " + std::to_string(i);
      }
      if (vs_nccl == nullptr || simulated_) continue;
      const std::vector<char> nccl = Download(ranks_[r].nccl_data, m.bytes());
      bitwise = bitwise && got == nccl;
      for (int64_t i = 0; i < m.n; ++i) {
        const double g = ValueAt(got, i, m.type), n = ValueAt(nccl, i, m.type);
        if (g != n) worst = std::max(worst, std::fabs(g - n) / std::max(std::fabs(n), 1e-30));
      }
    }
    if (vs_nccl != nullptr && !simulated_) {
      char buf[48];
      std::snprintf(buf, sizeof(buf), "max rel %.2e", worst);
      *vs_nccl = bitwise ? "bitwise" : buf;
    }
    return verdict.empty() ? "yes" : verdict;
  }

  // us per all-reduce: each rank's graph of kPerGraph launch(r) calls, replayed on every rank at
  // once; the median replay of the slowest rank / kPerGraph.
  double TimeUs(const std::function<void(int)>& launch) {
    // Captured on the ranks' own threads: an NCCL call may wait for the other ranks' calls.
    std::vector<cudaGraphExec_t> graphs(world_);
    OnEveryRank([&](int r) {
      cudaGraph_t graph;
      DSV3_CUDA_CHECK(cudaStreamBeginCapture(ranks_[r].stream, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < kPerGraph; ++i) launch(r);
      DSV3_CUDA_CHECK(cudaStreamEndCapture(ranks_[r].stream, &graph));
      DSV3_CUDA_CHECK(cudaGraphInstantiate(&graphs[r], graph, 0));
      DSV3_CUDA_CHECK(cudaGraphDestroy(graph));
    });
    OnEveryRank([&](int r) { DSV3_CUDA_CHECK(cudaGraphLaunch(graphs[r], ranks_[r].stream)); });
    double slowest = 0;
    if (simulated_) {
      slowest = SimulatedReplaysUs(graphs);
    } else {
      std::vector<double> medians(world_);
      ThreadBarrier barrier(world_);
      OnEveryRank([&](int r) { medians[r] = ReplaysUs(graphs[r], ranks_[r].stream, &barrier); });
      slowest = *std::max_element(medians.begin(), medians.end());
    }
    for (int r = 0; r < world_; ++r) {
      DSV3_CUDA_CHECK(cudaSetDevice(ranks_[r].device));
      DSV3_CUDA_CHECK(cudaGraphExecDestroy(graphs[r]));
    }
    return slowest / kPerGraph;
  }

  // One rank's median replay in us, every replay started together with the other ranks'.
  double ReplaysUs(cudaGraphExec_t graph, cudaStream_t stream, ThreadBarrier* barrier) {
    cudaEvent_t start, stop;
    DSV3_CUDA_CHECK(cudaEventCreate(&start));
    DSV3_CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<double> us;
    for (int i = 0; i < options_.replays; ++i) {
      barrier->Wait();
      DSV3_CUDA_CHECK(cudaEventRecord(start, stream));
      DSV3_CUDA_CHECK(cudaGraphLaunch(graph, stream));
      DSV3_CUDA_CHECK(cudaEventRecord(stop, stream));
      DSV3_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms;
      DSV3_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      us.push_back(ms * 1e3);
    }
    DSV3_CUDA_CHECK(cudaEventDestroy(start));
    DSV3_CUDA_CHECK(cudaEventDestroy(stop));
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  }

  // Simulated ranks: every rank's graph forked from rank 0's stream and joined back to it.
  double SimulatedReplaysUs(const std::vector<cudaGraphExec_t>& graphs) {
    cudaStream_t main = ranks_[0].stream;
    cudaEvent_t start, stop;
    std::vector<cudaEvent_t> done(world_);
    DSV3_CUDA_CHECK(cudaEventCreate(&start));
    DSV3_CUDA_CHECK(cudaEventCreate(&stop));
    for (cudaEvent_t& e : done)
      DSV3_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    std::vector<double> us;
    for (int i = 0; i < options_.replays; ++i) {
      DSV3_CUDA_CHECK(cudaEventRecord(start, main));
      for (int r = 1; r < world_; ++r)
        DSV3_CUDA_CHECK(cudaStreamWaitEvent(ranks_[r].stream, start));
      for (int r = 0; r < world_; ++r)
        DSV3_CUDA_CHECK(cudaGraphLaunch(graphs[r], ranks_[r].stream));
      for (int r = 1; r < world_; ++r) {
        DSV3_CUDA_CHECK(cudaEventRecord(done[r], ranks_[r].stream));
        DSV3_CUDA_CHECK(cudaStreamWaitEvent(main, done[r]));
      }
      DSV3_CUDA_CHECK(cudaEventRecord(stop, main));
      DSV3_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms;
      DSV3_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      us.push_back(ms * 1e3);
    }
    for (cudaEvent_t e : done) DSV3_CUDA_CHECK(cudaEventDestroy(e));
    DSV3_CUDA_CHECK(cudaEventDestroy(start));
    DSV3_CUDA_CHECK(cudaEventDestroy(stop));
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  }

  const Options options_;
  const int world_;
  const bool simulated_;
  std::vector<Rank> ranks_;
  // Never set: the bench has nothing to abort. Under UVA its host address is its device address
  // on every GPU (portable, mapped).
  uint32_t* abort_ = nullptr;
};

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return false;
    const int v = std::atoi(argv[++i]);
    if (a == "--gpus" && v >= 1 && v <= dsv3::kernels::kPeerAllReduceMaxRanks) {
      o->gpus = v;
    } else if (a == "--blocks" && v >= 1 && v <= dsv3::kernels::kPeerAllReduceMaxBlocks) {
      o->blocks = v;
    } else if (a == "--replays" && v >= 1) {
      o->replays = v;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Simulated ranks spin until every rank's kernel runs: one hardware work queue per stream (8
  // by default), so that no rank's graph waits in a queue behind another's. Before any CUDA call.
  setenv("CUDA_DEVICE_MAX_CONNECTIONS", "32", 1);
  Options options;
  if (!ParseArgs(argc, argv, &options)) {
    std::fprintf(stderr, "usage: %s [--gpus N (1-8)] [--blocks B (1-%d)] [--replays R]\n", argv[0],
                 dsv3::kernels::kPeerAllReduceMaxBlocks);
    return 2;
  }
  int count = 0;
  DSV3_CUDA_CHECK(cudaGetDeviceCount(&count));
  const int gpus = std::min(options.gpus > 0 ? options.gpus : count, 8);
  if (gpus > count) {
    std::fprintf(stderr, "--gpus %d: only %d visible\n", gpus, count);
    return 2;
  }
  bool ok = true;
  if (gpus >= 2) {
    std::printf(
        "## %d GPUs (one thread each, peer access), grid cap %d blocks, %d all-reduces per "
        "graph, median of %d replays\n\n",
        gpus, options.blocks, kPerGraph, options.replays);
    ok = Bench(options, gpus, false).Run();
  } else {
    std::printf(
        "NCCL needs >= 2 GPUs: only the custom all-reduce, its ranks simulated on one GPU "
        "(timings are not NVLink's)\n");
    for (int world : {2, 4, 8}) {
      std::printf("\n## %d simulated ranks on GPU 0, grids of %d blocks\n\n", world,
                  kSimulatedBlocks);
      ok = Bench(options, world, true).Run() && ok;
    }
  }
  std::printf("\n%s\n", ok ? "all checks OK" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
