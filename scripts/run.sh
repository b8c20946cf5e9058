#!/usr/bin/env bash
# Installs the dependencies, builds, and starts the daemon: gRPC on --listen and the
# OpenAI-compatible HTTP API on 127.0.0.1:8000 (HTTP_LISTEN=HOST:PORT to move it, HTTP_LISTEN=
# to turn it off). Without --model it serves the embedded demo model. Arguments go to
# dsv3-server, e.g.
#   bash scripts/run.sh --listen 0.0.0.0:50051 --model /models/DeepSeek-V3
# See docs/serving.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_UNITY_BUILD=ON
cmake --build "$build_dir" -j "$(nproc)" --target dsv3-server dsv3-client
http_listen=${HTTP_LISTEN-127.0.0.1:8000}
exec "$build_dir/server/dsv3-server" ${http_listen:+--http-listen "$http_listen"} "$@"
