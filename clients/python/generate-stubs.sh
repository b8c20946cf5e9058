#!/usr/bin/env bash
# Regenerates the committed gRPC stubs (src/dsv3/v1/inference_pb2*.py) from
# proto/dsv3/v1/inference.proto with Debian's protoc and grpc_python_plugin
# (protobuf-compiler, protobuf-compiler-grpc), into OUT_DIR (default: src).
# Committed so that `pip install` needs no compiler; tests/test_stubs.py fails when they no
# longer match the proto.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/src}"
protoc --proto_path="$root/proto" --python_out="$out" --grpc_out="$out" \
  --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" "$root/proto/dsv3/v1/inference.proto"
