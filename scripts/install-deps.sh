#!/usr/bin/env bash
# Installs the Debian packages dsv3-serve builds and tests with. Idempotent: packages already
# present are skipped, so a second run is quick and changes nothing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl xz-utils zstd openssl
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev libpcre2-dev libgloo-dev libcpp-httplib-dev
  clang libclang-rt-14-dev
  python3 python3-numpy python3-grpcio python3-protobuf python3-yaml python3-venv
  nodejs
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# scripts/check-k8s.sh installs its validators with npm. NodeSource's nodejs bundles npm and
# conflicts with Debian's npm package, so npm is only asked for where it is missing.
if ! command -v npm >/dev/null; then missing+=(npm); fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
