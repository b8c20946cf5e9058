#!/usr/bin/env bash
# Packs the GPU binaries of a CUDA build for the device machine (docs/cuda.md, "Running on the
# H200"): stripped binaries into .device/bin.tar.xz (bin/ inside), their shared libraries (ldd,
# minus glibc, the compiler runtime and CUDA's runtime, cuBLASLt and NCCL, which the device has)
# into .device/lib.tar.xz (lib/ inside). Compressed, both stay well inside the run tool's 64 MiB
# next to the working tree.
# Then: run(command="tools/dsv3-bench/device-run.sh all", carry=[".device"]).
# Usage: tools/dsv3-bench/pack-device.sh [build-dir]   (default build-cuda)
set -euo pipefail
build=${1:-build-cuda}
rm -rf .device && mkdir -p .device/bin .device/lib
# EXTRA: more binaries of the build, e.g. "server/dsv3-server server/dsv3-server-load
# tools/dsv3-client" for server-load-gpu.sh.
extra=()
for e in ${EXTRA:-}; do extra+=("$build/$e"); done
for f in "$build"/tests/gpu/gpu_*_test "$build"/tools/dsv3-bench "$build"/tools/dsv3-generate \
  "${extra[@]}"; do
  [ -x "$f" ] || continue
  strip -o ".device/bin/$(basename "$f")" "$f"
done
# CUDA's libraries are the device's own, but for CUPTI (dsv3-bench's kernel trace), which the
# device machine's toolkit may lack.
ldd .device/bin/* | awk '/=> \// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s)\.so' |
  grep -vE '/usr/local/cuda[^ ]*/lib(64)?/lib(cudart|cublas|cublasLt|nccl)' |
  xargs -r cp -L -t .device/lib
tar cJf .device/lib.tar.xz -C .device lib && rm -rf .device/lib
ls .device/bin && tar cJf .device/bin.tar.xz -C .device bin && rm -rf .device/bin
du -sh .device
