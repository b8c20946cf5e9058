#include "engine/parallel/parallel_config.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"

namespace dsv3 {
namespace {

// Bounds of the variables, wide enough for any cluster and small enough to catch typos.
constexpr int kMaxRanks = 4096;

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

// A setting taken from a flag or its environment variable; `source` says which, as errors
// should show it ("--nnodes 2", "NNODES=2").
struct IntSetting {
  int value = 0;
  std::string source;
};

// The flag when given, else the variable when set, else nothing; both: they must agree.
absl::StatusOr<std::optional<IntSetting>> FlagOrVariable(std::optional<int> flag,
                                                         const std::string& flag_name,
                                                         const EnvLookup& getenv,
                                                         const std::string& variable, int min) {
  std::optional<IntSetting> from_env;
  if (getenv(variable)) {
    DSV3_ASSIGN_OR_RETURN(const int value, IntVariable(getenv, variable, min, kMaxRanks));
    from_env = IntSetting{value, absl::StrCat(variable, "=", value)};
  }
  if (!flag) return from_env;
  IntSetting from_flag{*flag, absl::StrCat(flag_name, " ", *flag)};
  if (from_env && from_env->value != *flag) {
    return absl::InvalidArgumentError(
        absl::StrCat(from_flag.source, " disagrees with ", from_env->source));
  }
  return from_flag;
}

struct Address {
  std::string host;
  int port = 0;
  std::string source;
};

// "HOST:PORT" or "[IPV6]:PORT".
absl::StatusOr<Address> ParseDistInitAddr(const std::string& text) {
  const std::string source = absl::StrCat("--dist-init-addr ", text);
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("--dist-init-addr '", text, "' must be HOST:PORT with PORT in [1, 65535]"));
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad();
  std::string host = text.substr(0, colon);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad();
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port < 1 || port > 65535) return bad();
  return Address{host, port, source};
}

// Global rank 0's store: --dist-init-addr, or MASTER_ADDR and MASTER_PORT (both or neither).
absl::StatusOr<std::optional<Address>> RendezvousAddress(const std::string& dist_init_addr,
                                                         const EnvLookup& getenv) {
  std::optional<Address> from_env;
  const std::optional<std::string> host = getenv("MASTER_ADDR");
  if (host || getenv("MASTER_PORT")) {
    if (!host || host->empty()) {
      return absl::InvalidArgumentError(
          "MASTER_ADDR is not set but MASTER_PORT is: rank 0's address needs both");
    }
    DSV3_ASSIGN_OR_RETURN(const int port, IntVariable(getenv, "MASTER_PORT", 1, 65535));
    from_env = Address{*host, port, absl::StrCat("MASTER_ADDR=", *host, " MASTER_PORT=", port)};
  }
  if (dist_init_addr.empty()) return from_env;
  DSV3_ASSIGN_OR_RETURN(Address from_flag, ParseDistInitAddr(dist_init_addr));
  if (from_env && (from_env->host != from_flag.host || from_env->port != from_flag.port)) {
    return absl::InvalidArgumentError(
        absl::StrCat(from_flag.source, " disagrees with ", from_env->source));
  }
  return from_flag;
}

// What the flags and NNODES/NODE_RANK/MASTER_* say about a per-node launch, merged.
struct NodeLaunch {
  std::optional<IntSetting> nnodes;
  std::optional<IntSetting> node_rank;
  std::optional<Address> address;
  bool dist_init_addr_flag = false;
};

absl::StatusOr<NodeLaunch> ReadNodeLaunch(const NodeLaunchFlags& flags, const EnvLookup& getenv) {
  NodeLaunch n;
  DSV3_ASSIGN_OR_RETURN(
      n.nnodes, FlagOrVariable(flags.nnodes >= 1 ? std::optional<int>(flags.nnodes) : std::nullopt,
                               "--nnodes", getenv, "NNODES", 1));
  DSV3_ASSIGN_OR_RETURN(
      n.node_rank,
      FlagOrVariable(flags.node_rank >= 0 ? std::optional<int>(flags.node_rank) : std::nullopt,
                     "--node-rank", getenv, "NODE_RANK", 0));
  DSV3_ASSIGN_OR_RETURN(n.address, RendezvousAddress(flags.dist_init_addr, getenv));
  n.dist_init_addr_flag = !flags.dist_init_addr.empty();
  return n;
}

// RANK is set: this process is one rank, launched externally or spawned by its node's local
// rank 0. A per-node launch described as well (a spawned worker repeats its parent's flags)
// must put RANK on that node.
absl::StatusOr<ParallelConfig> PerRankLaunch(int tp, const NodeLaunch& node,
                                             const EnvLookup& getenv, ParallelConfig c) {
  DSV3_ASSIGN_OR_RETURN(c.world_size, IntVariable(getenv, "WORLD_SIZE", 1, kMaxRanks));
  DSV3_ASSIGN_OR_RETURN(c.rank, IntVariable(getenv, "RANK", 0, c.world_size - 1));
  if (tp != 1 && tp != c.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp ", tp, " disagrees with WORLD_SIZE=", c.world_size));
  }
  const bool has_local_rank = getenv("LOCAL_RANK").has_value();
  if (has_local_rank) {
    DSV3_ASSIGN_OR_RETURN(c.local_rank, IntVariable(getenv, "LOCAL_RANK", 0, 1023));
  }
  if (node.nnodes) {
    const int nnodes = node.nnodes->value;
    if (c.world_size % nnodes != 0) {
      return absl::InvalidArgumentError(absl::StrCat("WORLD_SIZE=", c.world_size,
                                                     " is not divisible by ",
                                                     node.nnodes->source));
    }
    const int per_node = c.world_size / nnodes;
    const int node_of_rank = c.rank / per_node;
    if (node.node_rank && node.node_rank->value != node_of_rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "RANK=", c.rank, " is on node ", node_of_rank, " (", per_node, " ranks per node with ",
          node.nnodes->source, "), not ", node.node_rank->source));
    }
    if (has_local_rank && c.local_rank != c.rank % per_node) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LOCAL_RANK=", c.local_rank, " disagrees with RANK=", c.rank, ": that is local rank ",
          c.rank % per_node, " of node ", node_of_rank, " with ", node.nnodes->source));
    }
  }
  if (c.world_size == 1) return c;
  if (!node.address) {
    return absl::InvalidArgumentError(
        "MASTER_ADDR is not set: with WORLD_SIZE > 1 every rank needs rank 0's address "
        "(MASTER_ADDR and MASTER_PORT, or --dist-init-addr)");
  }
  c.master_addr = node.address->host;
  c.master_port = node.address->port;
  return c;
}

// No RANK: this process is local rank 0 of its node (of the only node on a one-host launch).
absl::StatusOr<ParallelConfig> PerNodeLaunch(int tp, const NodeLaunch& node, ParallelConfig c) {
  const int nnodes = node.nnodes ? node.nnodes->value : 1;
  const std::string nnodes_source = node.nnodes ? node.nnodes->source : "--nnodes 1";
  if (nnodes > 1 && !node.node_rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        nnodes_source, " needs --node-rank (or NODE_RANK): which node this process starts"));
  }
  const int node_rank = node.node_rank ? node.node_rank->value : 0;
  if (node_rank >= nnodes) {
    return absl::InvalidArgumentError(absl::StrCat(node.node_rank->source,
                                                   " is out of range: ", nnodes_source,
                                                   " numbers the nodes 0 to ", nnodes - 1));
  }
  if (tp % nnodes != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp ", tp, " is not divisible by ", nnodes_source,
                     ": every node runs --tp / --nnodes ranks"));
  }
  if (nnodes > 1 && !node.address) {
    return absl::InvalidArgumentError(absl::StrCat(
        nnodes_source, " needs --dist-init-addr HOST:PORT (or MASTER_ADDR and MASTER_PORT): "
                       "where node 0 serves the rendezvous"));
  }
  c.world_size = tp;
  c.node_ranks = tp / nnodes;
  c.rank = node_rank * c.node_ranks;
  if (node.address) {
    c.master_addr = node.address->host;
    c.master_port = node.address->port;
  }
  return c;
}

}  // namespace

absl::StatusOr<ParallelConfig> ParallelConfigFrom(int tp, const NodeLaunchFlags& flags,
                                                  absl::Duration timeout,
                                                  const EnvLookup& getenv) {
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("--tp ", tp, " must be >= 1"));
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--rank-timeout-s must be positive");
  }
  ParallelConfig c;
  c.timeout = timeout;
  DSV3_ASSIGN_OR_RETURN(const NodeLaunch node, ReadNodeLaunch(flags, getenv));
  if (getenv("RANK")) return PerRankLaunch(tp, node, getenv, c);
  if (getenv("WORLD_SIZE")) {
    return absl::InvalidArgumentError(
        "WORLD_SIZE is set but RANK is not: set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
        "together for one process per rank, or use --tp (with --nnodes for several hosts)");
  }
  // A leftover MASTER_ADDR alone must not turn a one-host run into a half-configured group.
  if (node.address && !node.dist_init_addr_flag && !node.nnodes) {
    return absl::InvalidArgumentError(
        "MASTER_ADDR and MASTER_PORT are set but neither RANK nor NNODES is: set RANK and "
        "WORLD_SIZE for one process per rank, NNODES and NODE_RANK (or --nnodes and "
        "--node-rank) for one process per node, or none of them and use --tp on one host");
  }
  return PerNodeLaunch(tp, node, c);
}

absl::StatusOr<ParallelConfig> ParallelConfigFromEnvironment(int tp, const NodeLaunchFlags& flags,
                                                             absl::Duration timeout) {
  return ParallelConfigFrom(tp, flags, timeout,
                            [](const std::string& name) -> std::optional<std::string> {
                              const char* value = std::getenv(name.c_str());
                              if (value == nullptr) return std::nullopt;
                              return std::string(value);
                            });
}

}  // namespace dsv3
