// The process-wide switch for programmatic dependent launch (kernels/launch.cuh), for host code.
#pragma once

namespace dsv3::kernels {

// Whether kernels::Launch asks for PDL (CudaBackend::Options::programmatic_launch sets it; on by
// default). Off, kernels launch the plain way and their KernelPrologue() costs nothing.
void SetProgrammaticLaunch(bool on);
bool ProgrammaticLaunch();

}  // namespace dsv3::kernels
