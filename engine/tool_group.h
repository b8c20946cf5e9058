// RunToolOnModelGroup: the life of a command-line tool that runs a model on one rank or as a
// tensor-parallel group (dsv3-generate, dsv3-eval): start the group, load the model on this
// rank's backend, serve rank 0's plans on a worker rank, or run the tool's work on rank 0; a
// broken group ends the process at once with exit 1 (GroupFailureExit). Call it on the main
// thread (ModelGroup::Start's contract); errors are logged as one line and give exit 1.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model_group.h"

namespace dsv3 {

// Makes the backend of the rank whose GPU is `local_rank`.
using MakeToolBackend = std::function<absl::StatusOr<std::unique_ptr<Backend>>(int local_rank)>;
// Rank 0's work on the loaded group; returns the exit code.
using LeadTool = std::function<int(ModelGroup& group)>;

// Returns the process's exit code.
int RunToolOnModelGroup(ModelGroupOptions options, const std::string& model_dir,
                        const MakeToolBackend& make_backend, const LeadTool& lead);

}  // namespace dsv3
