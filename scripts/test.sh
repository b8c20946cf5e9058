#!/usr/bin/env bash
# Installs the dependencies, builds everything (the CUDA backend too where nvcc exists) and runs
# the tests that need no GPU. GPU tests (label gpu) are excluded here; they run on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build_dir=${BUILD_DIR:-build}
# Unity (jumbo) sources: the engine's and server's libraries compile in ~40% of the CPU time,
# which CI's two cores are short of; a plain build (no flag) compiles every file on its own.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_UNITY_BUILD=ON
cmake --build "$build_dir" -j "$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" -LE gpu
