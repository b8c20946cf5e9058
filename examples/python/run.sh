#!/usr/bin/env bash
# Runs client.py with the client package from this checkout (clients/python/src), under the
# first python3 that has grpcio and protobuf: the one on PATH (a venv with
# `pip install clients/python`), else Debian's (python3-grpcio, python3-protobuf).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../../clients/python/src" && pwd)"
for python in python3 /usr/bin/python3; do
  if "$python" -c "import grpc, google.protobuf" 2>/dev/null; then
    PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$here/client.py" "$@"
  fi
done
echo "run.sh: no python3 with grpcio and protobuf (apt-get install python3-grpcio python3-protobuf)" >&2
exit 1
