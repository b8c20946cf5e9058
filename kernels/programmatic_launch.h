// The process-wide switch for programmatic dependent launch (kernels/launch.cuh), for host code.
#pragma once

namespace dsv3::kernels {

// Whether kernels::Launch, called from this thread, asks for PDL. Off until set: CudaBackend sets
// it at the start of each step (CudaBackend::Options::programmatic_launch). Off, kernels launch
// the plain way and their KernelPrologue() costs nothing.
void SetProgrammaticLaunch(bool on);
bool ProgrammaticLaunch();

}  // namespace dsv3::kernels
