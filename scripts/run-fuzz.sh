#!/usr/bin/env bash
# Builds the tokenizer fuzzer (clang, libFuzzer, ASan) in its own build directory and runs it for
# a bounded time on the seed corpus in tests/fuzz/corpus/tokenizer. Exits non-zero when the
# fuzzer finds a crash, a sanitizer report or a broken invariant (the input is kept in
# BUILD_DIR/fuzz-artifacts/).
#
#   scripts/run-fuzz.sh [SECONDS=60] [BUILD_DIR=build-fuzz]
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(realpath -m "${2:-$root/build-fuzz}")"

mkdir -p "$build"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DDSV3_CUDA=OFF -DDSV3_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 1; }
ninja -C "$build" tokenizer_fuzz

# New inputs go to a working corpus inside the build dir; the committed seeds stay as they are.
corpus="$build/fuzz-corpus/tokenizer"
artifacts="$build/fuzz-artifacts"
mkdir -p "$corpus" "$artifacts"
"$build/tests/fuzz/tokenizer_fuzz" -max_total_time="$seconds" -max_len=4096 -timeout=30 \
  -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" \
  "$corpus" "$root/tests/fuzz/corpus/tokenizer"
