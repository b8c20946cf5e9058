#include "engine/group_failure_exit.h"

#include <cstdlib>

namespace dsv3 {

GroupFailureExit& GroupFailureExit::Get() {
  static GroupFailureExit* const instance = new GroupFailureExit();
  return *instance;
}

GroupFailureExit::Armed GroupFailureExit::Arm(ModelGroup& group) {
  absl::MutexLock lock(&mu_);
  group_ = &group;
  return Armed(*this);
}

void GroupFailureExit::Disarm() {
  absl::MutexLock lock(&mu_);
  group_ = nullptr;
}

void GroupFailureExit::KillWorkersAndExit(int code) {
  // Held until the process ends: the main thread cannot destroy the group meanwhile.
  mu_.Lock();
  if (group_ != nullptr) group_->KillWorkers();
  std::_Exit(code);
}

}  // namespace dsv3
