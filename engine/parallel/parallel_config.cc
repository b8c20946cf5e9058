#include "engine/parallel/parallel_config.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dsv3 {
namespace {

absl::StatusOr<int> IntVariable(const EnvLookup& getenv, const std::string& name, int min,
                                int max) {
  const std::optional<std::string> text = getenv(name);
  int value = 0;
  if (!text || !absl::SimpleAtoi(*text, &value) || value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "=", text ? "'" + *text + "'" : "<unset>", " must be an integer in [",
                     min, ", ", max, "]"));
  }
  return value;
}

}  // namespace

absl::StatusOr<ParallelConfig> ParallelConfigFrom(int tp, absl::Duration timeout,
                                                  const EnvLookup& getenv) {
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("--tp ", tp, " must be >= 1"));
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--rank-timeout-s must be positive");
  }
  ParallelConfig c;
  c.timeout = timeout;
  if (!getenv("RANK")) {
    for (const char* name : {"WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
      if (getenv(name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, " is set but RANK is not: set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
                  "together, or none of them and use --tp on one host"));
      }
    }
    c.world_size = tp;
    c.spawn_workers = tp > 1;
    return c;
  }
  auto world_size = IntVariable(getenv, "WORLD_SIZE", 1, 4096);
  if (!world_size.ok()) return world_size.status();
  c.world_size = *world_size;
  auto rank = IntVariable(getenv, "RANK", 0, c.world_size - 1);
  if (!rank.ok()) return rank.status();
  c.rank = *rank;
  if (tp != 1 && tp != c.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp ", tp, " disagrees with WORLD_SIZE=", c.world_size));
  }
  if (getenv("LOCAL_RANK")) {
    auto local_rank = IntVariable(getenv, "LOCAL_RANK", 0, 1023);
    if (!local_rank.ok()) return local_rank.status();
    c.local_rank = *local_rank;
  }
  if (c.world_size == 1) return c;
  const std::optional<std::string> addr = getenv("MASTER_ADDR");
  if (!addr || addr->empty()) {
    return absl::InvalidArgumentError(
        "MASTER_ADDR is not set: with WORLD_SIZE > 1 every rank needs rank 0's address");
  }
  c.master_addr = *addr;
  auto port = IntVariable(getenv, "MASTER_PORT", 1, 65535);
  if (!port.ok()) return port.status();
  c.master_port = *port;
  return c;
}

absl::StatusOr<ParallelConfig> ParallelConfigFromEnvironment(int tp, absl::Duration timeout) {
  return ParallelConfigFrom(tp, timeout, [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  });
}

}  // namespace dsv3
