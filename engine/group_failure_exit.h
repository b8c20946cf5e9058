// GroupFailureExit: how a program ends when its tensor-parallel group breaks. The break is
// reported on a supervisor or runner thread (ModelGroupOptions::on_failure) while the main
// thread may already be tearing the group down, so the exit path must never reach the group
// through a pointer that the main thread frees.
//
// The main thread arms it with the group right after ModelGroup::Start and keeps the returned
// guard in a scope that ends before the group is destroyed. KillWorkersAndExit, from any thread,
// kills the workers of the armed group (if still armed) and ends the process; a disarm that
// comes while an exit is under way waits for it (and so never returns).
#pragma once

#include "absl/synchronization/mutex.h"
#include "engine/model_group.h"

namespace dsv3 {

class GroupFailureExit {
 public:
  // Disarms when it dies. Declare it after the group it guards, so that it dies first.
  class [[nodiscard]] Armed {
   public:
    explicit Armed(GroupFailureExit& owner) : owner_(owner) {}
    Armed(const Armed&) = delete;
    Armed& operator=(const Armed&) = delete;
    ~Armed() { owner_.Disarm(); }

   private:
    GroupFailureExit& owner_;
  };

  // The process-wide instance. Never destroyed: an exit may hold it while the process ends.
  static GroupFailureExit& Get();

  Armed Arm(ModelGroup& group);
  // Kills the armed group's workers (the launcher reaps them), then std::_Exit(code).
  [[noreturn]] void KillWorkersAndExit(int code);

 private:
  void Disarm();

  absl::Mutex mu_;
  ModelGroup* group_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace dsv3
