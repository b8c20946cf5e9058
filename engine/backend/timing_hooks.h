// The two narrow hooks op timing needs from a backend (TimingBackend, timing_backend.h):
// - WorkClock: marks on the backend's queue of work, so that ops are timed where they run (CUDA
//   events on the stream) without a synchronization between them;
// - OpSections: the named parts of an op a backend chooses at run time (which GEMM path, MLA's
//   sub-steps), reported to whoever times it.
#pragma once

#include <cstdint>
#include <memory>

namespace dsv3 {

class WorkClock {
 public:
  virtual ~WorkClock() = default;
  // Records a mark after all work queued so far; its id is valid until Reset. A mark made while
  // the queue is being captured as a graph (CUDA) is recorded again each time the graph runs,
  // and its id stays valid across Reset (the graph keeps it).
  virtual int64_t Mark() = 0;
  // Waits for mark `to`; the milliseconds from mark `from` to it.
  virtual float ElapsedMs(int64_t from, int64_t to) = 0;
  // Forgets every mark (a clock may reuse their resources).
  virtual void Reset() = 0;
};

// For host backends, whose ops have finished when they return: a mark is the time it is made.
std::unique_ptr<WorkClock> MakeHostWorkClock();

class OpSections {
 public:
  virtual ~OpSections() = default;
  // A named part of the op being run begins (`name` outlives the timing: a string literal);
  // sections may nest, and each ends with the EndSection that matches it.
  virtual void BeginSection(const char* name) = 0;
  virtual void EndSection() = 0;
};

}  // namespace dsv3
