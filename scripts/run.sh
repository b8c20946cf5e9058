#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the daemon on the embedded default model.
# Extra arguments go to dsv3-server (e.g. --listen 0.0.0.0:50051).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$(nproc)"
exec "$build_dir/server/dsv3-server" "$@"
