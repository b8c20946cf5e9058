#include "engine/parallel/rank_group.h"

#include "absl/strings/str_cat.h"
#include "engine/parallel/gloo_communicator.h"
#include "engine/parallel/socket_io.h"
#include "engine/util/status_macros.h"

namespace dsv3 {

absl::StatusOr<std::unique_ptr<RankGroup>> RankGroup::Start(const ParallelConfig& config,
                                                            std::vector<std::string> worker_args) {
  std::unique_ptr<RankGroup> group(new RankGroup(config));
  if (config.world_size == 1) {
    group->communicator_ = std::make_unique<SingleRankCommunicator>();
    return group;
  }
  TcpStoreOptions store_options{.host = config.master_addr,
                                .port = config.master_port,
                                .is_server = config.leader(),
                                .connect_timeout = config.startup_timeout};
  DSV3_ASSIGN_OR_RETURN(group->store_, TcpStore::Create(store_options));

  if (config.spawn_workers()) {
    RankGroup* g = group.get();
    DSV3_ASSIGN_OR_RETURN(group->launcher_,
                          Launcher::Start({.args = std::move(worker_args),
                                           .world_size = config.world_size,
                                           .first_rank = config.rank,
                                           .node_ranks = config.node_ranks,
                                           .master_addr = config.master_addr,
                                           .master_port = group->store_->port(),
                                           .on_worker_exit = [g](int rank, const std::string& how) {
                                             g->OnWorkerExit(rank, how);
                                           },
                                           .report_clean_exits = config.leader()}));
  }
  // Advertise the address that routes toward rank 0: with several hosts, peers must reach it
  // (on a one-host launch that is the loopback address).
  DSV3_ASSIGN_OR_RETURN(const std::string hostname,
                        parallel_internal::LocalAddressToward(config.master_addr,
                                                              group->store_->port()));
  DSV3_ASSIGN_OR_RETURN(group->communicator_,
                        GlooCommunicator::Create(*group->store_,
                                                 {.rank = config.rank,
                                                  .world_size = config.world_size,
                                                  .hostname = hostname,
                                                  .timeout = config.timeout,
                                                  .rendezvous_timeout = config.startup_timeout}));
  return group;
}

RankGroup::~RankGroup() {
  // Workers first: the communicator's sockets close after they are gone.
  StopWorkers(absl::ZeroDuration());
}

void RankGroup::OnWorkerExit(int rank, const std::string& how) {
  // During rendezvous, this process waits in the store for this worker's key: stop waiting.
  store_->Abort(absl::UnavailableError(
      absl::StrCat("rank ", rank, " ", how, " before the group was formed")));
  ExitHandler handler;
  {
    absl::MutexLock lock(&mu_);
    if (first_exit_) return;  // one report: the first failure is the one that matters
    first_exit_.emplace(rank, how);
    handler = handler_;
  }
  if (handler) handler(rank, how);
}

void RankGroup::SetOnWorkerExit(ExitHandler handler) {
  std::optional<std::pair<int, std::string>> early;
  {
    absl::MutexLock lock(&mu_);
    handler_ = handler;
    early = first_exit_;
  }
  if (early && handler) handler(early->first, early->second);
}

std::optional<std::pair<int, std::string>> RankGroup::AwaitWorkerExit(absl::Duration wait) {
  absl::MutexLock lock(&mu_);
  auto reported = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return first_exit_.has_value(); };
  mu_.AwaitWithTimeout(absl::Condition(&reported), wait);
  return first_exit_;
}

void RankGroup::StopWorkers(absl::Duration grace) {
  if (launcher_) launcher_->Stop(grace);
}

}  // namespace dsv3
