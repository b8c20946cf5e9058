// dsv3-load-bench: loads a checkpoint's weights onto one device the way dsv3-server does
// (ModelWeights::Load: planned slice reads, parallel preads into staging memory, value checks,
// copies to the device) and nothing else (no KV cache, tokenizer or engine), then prints one
// JSON object: bytes read, seconds, GB/s. With --tp N --rank R it loads rank R's slices only,
// so one GPU measures what each rank of a tensor-parallel group reads.
// tools/dsv3-bench/load-bench.sh runs it cold and warm against `cat` (docs/perf/load.md).
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/backend/backend_factory.h"
#include "engine/config/model_config.h"
#include "engine/model/model_weights.h"
#include "engine/weights/checkpoint.h"
#include "spdlog/spdlog.h"

namespace dsv3 {
namespace {

struct Args {
  std::string model;
  std::string device = "cuda";
  int gpu = 0;
  int tp = 1;
  int rank = 0;
  int reader_threads = ReaderOptions().threads;
  int64_t staging_mb = ReaderOptions().staging_bytes >> 20;
  int64_t chunk_mb = ReaderOptions().chunk_bytes >> 20;
  bool direct_io = false;
};

int Run(const Args& a) {
  const absl::Time start = absl::Now();
  auto config = ModelConfig::FromModelDir(a.model);
  if (!config.ok()) return spdlog::error("{}", config.status().ToString()), 1;
  auto ckpt = Checkpoint::Open(a.model);
  if (!ckpt.ok()) return spdlog::error("{}", ckpt.status().ToString()), 1;
  auto backend = MakeBackend(a.device, /*threads=*/0, a.gpu);
  if (!backend.ok()) return spdlog::error("{}", backend.status().ToString()), 1;
  const double open_s = absl::ToDoubleSeconds(absl::Now() - start);

  LoadProgress progress;
  WeightLoadOptions options;
  options.progress = &progress;
  options.reader.threads = a.reader_threads;
  options.reader.staging_bytes = a.staging_mb << 20;
  options.reader.chunk_bytes = a.chunk_mb << 20;
  options.reader.direct_io = a.direct_io;
  const absl::Time load_start = absl::Now();
  auto weights = ModelWeights::Load(**ckpt, *config, **backend, Shard{a.rank, a.tp}, options);
  if (!weights.ok()) return spdlog::error("{}", weights.status().ToString()), 1;
  (*backend)->Synchronize();
  const double load_s = absl::ToDoubleSeconds(absl::Now() - load_start);
  const LoadProgress::Snapshot s = progress.Get();
  std::printf(
      "%s\n",
      absl::StrFormat(
          R"({"device": "%s", "tp": %d, "rank": %d, "reader_threads": %d, "staging_mb": %d, )"
          R"("chunk_mb": %d, "direct_io": %s, "shards": %d, "bytes": %d, "open_s": %.3f, )"
          R"("load_s": %.3f, "gb_per_s": %.3f})",
          (*backend)->name(), a.tp, a.rank, a.reader_threads, a.staging_mb, a.chunk_mb,
          a.direct_io ? "true" : "false", s.shards_total, s.bytes_read, open_s, load_s,
          load_s > 0 ? static_cast<double>(s.bytes_read) / 1e9 / load_s : 0.0)
          .c_str());
  return 0;
}

}  // namespace
}  // namespace dsv3

int main(int argc, char** argv) {
  dsv3::Args args;
  CLI::App app{"Load a checkpoint's weights onto one device and report GB/s"};
  app.add_option("--model", args.model, "model directory (config.json, *.safetensors)")->required();
  app.add_option("--device", args.device, "cuda, cpu or auto");
  app.add_option("--gpu", args.gpu, "GPU index");
  app.add_option("--tp", args.tp, "tensor-parallel size whose slices to load");
  app.add_option("--rank", args.rank, "the rank (of --tp) whose slices to load");
  app.add_option("--reader-threads", args.reader_threads, "concurrent preads");
  app.add_option("--staging-mb", args.staging_mb,
                 "staging ring (grown to twice the largest tensor)");
  app.add_option("--chunk-mb", args.chunk_mb, "bytes per pread");
  app.add_flag("--direct-io", args.direct_io, "O_DIRECT reads (bypass the page cache)");
  CLI11_PARSE(app, argc, argv);
  return dsv3::Run(args);
}
