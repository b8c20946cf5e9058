#!/usr/bin/env bash
# Installs the dependencies, builds, and starts the gRPC daemon. Without --model it serves the
# embedded demo model (tools/demo-model: a small trained DeepSeek-V3-architecture model).
# Arguments go to dsv3-server, e.g.
#   bash scripts/run.sh --listen 0.0.0.0:50051 --model /models/DeepSeek-V3
# See docs/serving.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$(nproc)" --target dsv3-server dsv3-client
exec "$build_dir/server/dsv3-server" "$@"
