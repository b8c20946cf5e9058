// SchedulingPolicy: which sequence the scheduler serves first. One comparison orders both queues:
// the waiting queue is admitted from its front, the running list is scheduled from its front and
// preempted from its back, so the sequence served first is also the last to lose its blocks.
#pragma once

#include "engine/scheduler/sequence.h"

namespace dsv3 {

class SchedulingPolicy {
 public:
  virtual ~SchedulingPolicy() = default;
  // True when `a` is served before `b`; a strict weak order that never changes for a pair.
  virtual bool Before(const Sequence& a, const Sequence& b) const = 0;
};

// First come, first served: earlier arrival first; preemption takes the newest running sequence,
// and a preempted sequence goes back in front of every sequence that arrived after it.
class FcfsPolicy final : public SchedulingPolicy {
 public:
  bool Before(const Sequence& a, const Sequence& b) const override {
    return a.arrival() < b.arrival();
  }
};

}  // namespace dsv3
