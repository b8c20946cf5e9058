#!/usr/bin/env bash
# Installs the dependencies, builds everything (the CUDA backend too where nvcc exists) and runs
# the tests that need no GPU. GPU tests (label gpu) are excluded here; they run on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" -LE gpu
