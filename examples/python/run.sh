#!/usr/bin/env bash
# Generates the Python stubs of proto/dsv3/v1/inference.proto into a temporary directory (no
# generated code in the repository) and runs client.py with the given arguments.
# Needs protoc, grpc_python_plugin (protobuf-compiler-grpc), python3-grpcio, python3-protobuf.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
stubs="$(mktemp -d)"
trap 'rm -rf "$stubs"' EXIT
protoc --proto_path="$root/proto" --python_out="$stubs" --grpc_out="$stubs" \
  --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" "$root/proto/dsv3/v1/inference.proto"
# Debian's grpcio lives in the system Python, which a pyenv or venv python3 does not see.
python=/usr/bin/python3
[ -x "$python" ] || python=python3
PYTHONPATH="$stubs${PYTHONPATH:+:$PYTHONPATH}" "$python" "$here/client.py" "$@"
