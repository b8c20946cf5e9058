#include "engine/tool_group.h"

#include <string>
#include <thread>

#include "engine/group_failure_exit.h"
#include "spdlog/spdlog.h"

namespace dsv3 {

int RunToolOnModelGroup(ModelGroupOptions options, const std::string& model_dir,
                        const MakeToolBackend& make_backend, const LeadTool& lead) {
  options.on_failure = [](const absl::Status& status) {
    // A lost rank: rank 0 may be blocked in a collective until its timeout, so end the whole
    // group now rather than wait (the launcher kills and reaps the workers).
    spdlog::error("{}", std::string(status.message()));
    std::thread([] { GroupFailureExit::Get().KillWorkersAndExit(1); }).detach();
  };
  auto group = ModelGroup::Start(options);
  if (!group.ok()) {
    spdlog::error("{}", std::string(group.status().message()));
    return 1;
  }
  // The failure thread outlives this frame; it reaches the group only while this guard lives.
  const GroupFailureExit::Armed armed = GroupFailureExit::Get().Arm(**group);
  // After Start: a spawned worker learns its GPU (LOCAL_RANK) there.
  auto backend = make_backend((*group)->local_rank());
  if (!backend.ok()) {
    spdlog::error("{}", std::string(backend.status().message()));
    return 1;
  }
  if (absl::Status s = (*group)->Load(model_dir, *std::move(backend)); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }
  if ((*group)->is_worker()) {
    const absl::Status s = (*group)->RunWorker();
    if (!s.ok()) spdlog::error("{}", std::string(s.message()));
    return s.ok() ? 0 : 1;
  }
  const int rc = lead(**group);
  (*group)->Shutdown();
  return rc;
}

}  // namespace dsv3
