#include "kernels/programmatic_launch.h"

namespace dsv3::kernels {

namespace {
// Per thread, as CUDA's current device is: each rank's steps run on a thread of their own.
thread_local bool programmatic_launch = false;
}  // namespace

void SetProgrammaticLaunch(bool on) { programmatic_launch = on; }

bool ProgrammaticLaunch() { return programmatic_launch; }

}  // namespace dsv3::kernels
